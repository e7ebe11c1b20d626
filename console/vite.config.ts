import { resolve } from 'node:path';
import { defineConfig } from 'vite';

// The API serves the build at /console/ (src/api/console.ts); everything is bundled, nothing loads from a CDN.
export default defineConfig({
  root: __dirname,
  base: '/console/',
  logLevel: 'warn',
  build: { outDir: resolve(__dirname, '..', 'dist', 'console'), emptyOutDir: true, target: 'es2022' },
});
