// Browser tests (issues D1, D2): Debian's Chromium, never a downloaded browser, with the flags this
// machine needs offline. The hosts are started by tests/browser/global-setup.ts on free ports.
import { defineConfig } from '@playwright/test';

const offline = [
  '--headless', '--no-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export default defineConfig({
  testDir: './tests/browser',
  globalSetup: './tests/browser/global-setup.ts',
  timeout: 180_000,
  workers: 1,  // two cores: one browser at a time keeps timings and threads honest
  reporter: [['list']],
  outputDir: 'test-results',
  use: { launchOptions: { executablePath: '/usr/bin/chromium', args: offline } },
  projects: [
    { name: 'chromium', testIgnore: /webgpu\.spec\.ts/ },
    {
      name: 'chromium-webgpu',  // SwiftShader: a software WebGPU adapter
      testMatch: /webgpu\.spec\.ts/,
      use: { launchOptions: { executablePath: '/usr/bin/chromium', args: [...offline, '--enable-unsafe-webgpu'] } },
    },
  ],
});
