// componentize-js runs its build tools on @bytecodealliance/preview2-shim,
// whose 0.26.1 release starts them with no preopened directories ("failed to
// get path metadata … os error 44"); give them the file system back.
// Loaded with NODE_OPTIONS="--import <this file>" by build.sh.
import { _setPreopens } from "@bytecodealliance/preview2-shim/filesystem";
_setPreopens({ "/": "/" });
