// The component's entry: exports handler.js's `handle` through natsapp.js,
// parsing payloads with its `messageParser` when it exports one.
import * as app from "./handler.js";
import { adapt } from "./natsapp.js";

if (typeof app.handle !== "function") throw new Error("handler.js must export function handle(data, msg)");

export const handler = { handle: adapt(app.handle, app.messageParser) };
