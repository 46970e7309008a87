// The benchmark's no-op handler: returns, so the runtime acks.
export function handle(data, msg) {}
