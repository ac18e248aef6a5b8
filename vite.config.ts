import { fileURLToPath } from 'node:url';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vitest/config';

const repoRoot = fileURLToPath(new URL('.', import.meta.url));
const hub = 'http://127.0.0.1:3000';

// Builds the dashboard (web/ → web/dist, served by the hub in production) and
// configures vitest for the whole repo.
export default defineConfig({
  root: fileURLToPath(new URL('./web', import.meta.url)),
  plugins: [svelte({ configFile: false })],
  build: {
    outDir: fileURLToPath(new URL('./web/dist', import.meta.url)),
    emptyOutDir: true,
  },
  server: {
    proxy: {
      '/api': hub,
      '/socket.io': { target: hub, ws: true },
    },
  },
  test: {
    // The vite root is web/; tests live all over the repo, so vitest resolves from the repo root.
    root: repoRoot,
    include: [
      'shared/src/**/*.test.ts',
      'server/src/**/*.test.ts',
      'worker/src/**/*.test.ts',
      'web/src/**/*.test.ts',
      'test/**/*.test.ts',
    ],
    testTimeout: 60000,
    hookTimeout: 60000,
    fileParallelism: false,
    pool: 'forks',
  },
});
