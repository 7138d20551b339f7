// The operations service's browser client, an ES module with no build step: served at
// /client/operations.js, types at /client/operations.d.ts. See docs/clients.md.
import { io } from "./socket.io.esm.min.js";
import { clientWith, OperationsError } from "./client.js";

export { OperationsError };
export const connect = clientWith(io);
