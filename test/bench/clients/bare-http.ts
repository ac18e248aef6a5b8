import { createServer } from 'node:http';

// The cold-start floor: Node with the tsx loader and an HTTP server answering /healthz.
createServer((_req, res) => res.end('{"ok":true}')).listen(Number(process.env.PORT), '127.0.0.1');
