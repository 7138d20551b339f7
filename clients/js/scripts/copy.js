// Copies the client's files from hub/static/client/, where they live once, into the package
// (the copies are ignored by git): `npm pack` then needs no network and no build.
import { copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const source = join(here, "..", "..", "hub", "static", "client");
const files = ["operations.js", "operations.d.ts", "node.js", "client.js", "socket.io.esm.min.js", "socket.io-client.LICENSE"];
for (const file of files) copyFileSync(join(source, file), join(here, file));
