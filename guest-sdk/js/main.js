// The component's entry: exports handler.js's `handle` through natsapp.js,
// parsing payloads with its `messageParser` when it exports one, and the
// warm-up, which calls its `warmUp` when it exports one.
import * as app from "./handler.js";
import { adapt, adaptWarmUp } from "./natsapp.js";

if (typeof app.handle !== "function") throw new Error("handler.js must export function handle(data, msg)");

export const handler = { handle: adapt(app.handle, app.messageParser) };

// Run once on an instance made ahead of need, before its message (WIT 0.1.3).
export const warmUp = { warm: adaptWarmUp(app.warmUp) };
