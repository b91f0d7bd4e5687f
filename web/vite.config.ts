import { defineConfig } from "vite";

// The console is embedded in the ztka binary and served under a strict CSP
// (`default-src 'self'`, no inline script or style), so the build must emit only files:
// no module-preload polyfill (an inline script), no inlined assets, one entry chunk.
export default defineConfig({
  base: "/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact", legalComments: "none" },
  build: {
    outDir: "../web-dist",
    emptyOutDir: true,
    assetsDir: "assets",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    cssCodeSplit: false,
    sourcemap: false,
    target: "es2020",
    reportCompressedSize: true,
  },
  server: {
    // `npm run dev` proxies the API to a local `ztka serve`.
    proxy: { "/api": { target: "https://localhost:8443", secure: false } },
  },
});
