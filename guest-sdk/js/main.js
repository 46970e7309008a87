// The component's entry: exports handler.js's `handle` through natsapp.js.
import { handle } from "./handler.js";
import { adapt } from "./natsapp.js";

if (typeof handle !== "function") throw new Error("handler.js must export function handle(data, msg)");

export const handler = { handle: adapt(handle) };
