import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { api } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Flags for a closed network (no background lookups) and running as root.
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe('dashboard in a real browser', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let browser: Browser;
  let page: Page;
  let operator: string;
  let observer: string;

  beforeAll(async () => {
    hub = await startTestHub();
    operator = await hub.token('operator');
    observer = await hub.token('observer');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken('e2e-worker') });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  });
  afterAll(async () => {
    await browser?.close();
    await worker?.stop();
    await hub?.stop();
  });

  it('refuses a wrong token with a readable message', async () => {
    await page.goto(hub.url);
    await page.getByTestId('token-input').fill('hnd_definitely-wrong');
    await page.getByTestId('login-button').click();
    await expect.poll(() => page.getByTestId('login-error').textContent(), { timeout: 10_000 }).toMatch(/token/i);
  });

  it('logs in, lists runs live, and shows a run terminal read-only with its output', async () => {
    await page.getByTestId('token-input').fill(observer);
    await page.getByTestId('login-button').click();
    await page.getByTestId('runs-list').waitFor({ timeout: 10_000 });

    // Created after the page loaded: it must appear, and move through its states, without a reload.
    const script = 'echo "hello from handoff"; for i in 1 2 3 4 5 6; do echo "working $i"; sleep 0.4; done; echo "all done"';
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script }, title: 'e2e live run' });
    const runId = created.body.id as string;
    const row = page.locator(`[data-testid="run-row"][data-run-id="${runId}"]`);
    await row.waitFor({ timeout: 10_000 });
    await expect.poll(() => row.getAttribute('data-status'), { timeout: 15_000 }).toBe('running');

    await row.click();
    await page.getByTestId('terminal').waitFor({ timeout: 10_000 });
    const text = () => page.evaluate(() => (window as unknown as { __handoffTerminalText?: () => string }).__handoffTerminalText?.() ?? '');
    await expect.poll(text, { timeout: 15_000 }).toContain('hello from handoff');
    await expect.poll(() => page.getByTestId('run-status').textContent(), { timeout: 20_000 }).toMatch(/succeeded/);
    await expect.poll(text, { timeout: 10_000 }).toContain('all done');
    const lines = (await text()).split('\n');
    for (let i = 1; i <= 6; i++) expect(lines.filter((l) => l.includes(`working ${i}`))).toHaveLength(1);

    // Read-only: typing into the terminal sends nothing and changes nothing.
    await page.getByTestId('terminal').click();
    await page.keyboard.type('echo typed-by-observer\n');
    expect(await text()).not.toContain('typed-by-observer');
    await page.screenshot({ path: 'test-results/dashboard-run.png' });
  });
});
