// The Node entry of the npm package: the same client, with the socket.io-client package (the
// vendored browser build needs the browser's WebSocket).
import { io } from "socket.io-client";
import { clientWith, OperationsError } from "./client.js";

export { OperationsError };
export const connect = clientWith(io);
