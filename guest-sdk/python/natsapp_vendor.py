"""Installs a handler's third-party packages for componentize-py to bundle.

    python natsapp_vendor.py requirements.txt deps

installs what ``requirements.txt`` lists into ``deps/`` (again only when the
file changed) and checks that every package is pure Python: componentize-py
bundles Python source, and a native extension (``.so``) built for this
machine cannot run inside a WebAssembly component. A package that ships one
is named, with what works instead; the exit code is then 1.
"""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

STAMP = ".natsapp-requirements"

# What works instead of a package that ships a native extension.
INSTEAD = {
    "pydantic-core": "Pydantic 2 is built on it; Pydantic 1.10 is pure Python when built from "
    "source: put `--no-binary pydantic` and `pydantic>=1.10,<2` in requirements.txt",
    "msgpack": "msgpack has a pure-Python fallback: put `--no-binary msgpack` in requirements.txt "
    "(this script builds it with MSGPACK_PUREPYTHON=1)",
    "orjson": "use the standard library's json",
    "ujson": "use the standard library's json",
    "pyyaml": "PyYAML is pure Python when built from source without libyaml: "
    "put `--no-binary pyyaml` in requirements.txt",
    "numpy": "no pure-Python build exists; do the numeric work in the handler or in a service it calls",
}

NATIVE_SUFFIXES = (".so", ".pyd", ".dylib")


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(requirements, target):
    env = dict(os.environ, MSGPACK_PUREPYTHON="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    if target.exists():
        shutil.rmtree(target)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
         "--target", str(target), "-r", str(requirements)],
        env=env,
    )
    if done.returncode != 0:
        sys.exit(f"error: installing {requirements} into {target} failed (pip's message above)")


def natives(target):
    """Native files by the distribution that installed them."""
    found = {}
    for record in target.glob("*.dist-info/RECORD"):
        name = record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        for line in record.read_text().splitlines():
            path = line.split(",", 1)[0]
            if path.endswith(NATIVE_SUFFIXES) or ".so." in path:
                found.setdefault(name, []).append(path)
    return found


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    requirements, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    stamp = target / STAMP
    wanted = digest(requirements)
    if not (stamp.exists() and stamp.read_text() == wanted):
        install(requirements, target)
    found = natives(target)
    if found:
        lines = []
        for dist, files in sorted(found.items()):
            key = dist.lower().replace("_", "-")
            instead = INSTEAD.get(key, "use a pure-Python package, or a release of it built "
                                  f"without its extension (`--no-binary {key}` in requirements.txt)")
            lines.append(f"  {key} ships a native extension ({files[0]}): {instead}")
        stamp.unlink(missing_ok=True)
        sys.exit(
            f"error: {requirements}: packages with native extensions cannot run in a "
            "WebAssembly component (componentize-py bundles Python source only):\n" + "\n".join(lines)
        )
    stamp.write_text(wanted)


if __name__ == "__main__":
    main()
