import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { api } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// Terminal queries a hostile run prints, each of which xterm.js answers on its own:
// DA1, DA2, DSR/CPR, DECRQSS (SGR), OSC 10/11/12 colour queries, a window title report.
const QUERIES = String.raw`\033[c\033[>c\033[6n\033[5n\033P$qm\033\\\033]10;?\007\033]11;?\007\033]12;?\007\033[21t`;

/**
 * The agent reads its terminal raw (no line editing, no signals, no echo) and keeps every
 * byte it receives in received.bin, while printing the queries over and over.
 */
const AGENT = `stty raw -echo; ( while true; do printf '${QUERIES}'; echo; echo query-round; sleep 0.3; done ) & cat > received.bin`;

describe('a run’s output never makes a viewer’s browser type into the run', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let browser: Browser;
  let page: Page;
  let token: string;
  let runId: string;
  const cwd = mkdtempSync(path.join(tmpdir(), 'handoff-replies-'));
  const sent: string[] = [];

  beforeAll(async () => {
    hub = await startTestHub();
    token = await hub.token('operator');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`e2e-replies-${randomBytes(3).toString('hex')}`) });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('websocket', (ws) => ws.on('framesent', (frame) => void sent.push(String(frame.payload))));
  });
  afterAll(async () => {
    if (runId) await api(hub.url, token, 'POST', `/api/task-runs/${runId}/cancel`, {}).catch(() => undefined);
    await browser?.close();
    await worker?.stop();
    await hub?.stop();
    rmSync(cwd, { recursive: true, force: true });
  });

  const inputFrames = () => sent.filter((f) => f.includes('"term:input"'));
  const raw = () => {
    try {
      return readFileSync(path.join(cwd, 'received.bin'), 'latin1');
    } catch {
      return '';
    }
  };
  // tmux itself, as the pane's terminal, answers DA1 (?1;2c), DA2 (>84;0;0c: 84 = 'T' for
  // tmux), DSR (0n) and CPR (row;colR), as any terminal does. Those reach the run with or
  // without a browser; everything else it receives came from a viewer.
  const TMUX_REPLIES = /\x1b\[\?1;2c|\x1b\[>84;0;0c|\x1b\[0n|\x1b\[\d+;\d+R/g;
  const received = () => raw().replace(TMUX_REPLIES, '');
  const rounds = () => page.evaluate(() => ((window as unknown as { __handoffTerminalText?: () => string }).__handoffTerminalText?.() ?? '').split('query-round').length - 1);

  it('DA, DSR, DECRQSS and OSC colour queries while the operator holds write access: no frame leaves the browser, the run receives nothing; typed keys, arrows, Ctrl-C and a paste all arrive', async () => {
    const res = await api(hub.url, token, 'POST', '/api/task-runs', { command: { script: AGENT }, cwd, title: 'hostile queries' });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    runId = res.body.id as string;
    await page.goto(hub.url);
    await page.getByTestId('token-input').fill(token);
    await page.getByTestId('login-button').click();
    await page.getByTestId('runs-list').waitFor({ timeout: 10_000 });
    await page.goto(`${hub.url}/#/runs/${runId}`);
    await expect.poll(() => page.locator('[data-testid="session-item"][data-provider="web"]').getAttribute('data-status'), { timeout: 15_000 }).toBe('READY');
    const grant = await api(hub.url, token, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 10 });
    expect(grant.status, JSON.stringify(grant.body)).toBe(200);
    await expect.poll(() => page.getByTestId('terminal').getAttribute('data-writable'), { timeout: 10_000 }).toBe('true');

    // The queries keep coming while the terminal is writable and focused: xterm answers each one.
    await page.getByTestId('terminal').click();
    const start = await rounds();
    await expect.poll(rounds, { timeout: 15_000 }).toBeGreaterThan(start + 8);
    expect(inputFrames()).toEqual([]);
    expect(raw().length).toBeGreaterThan(0); // tmux did answer: the queries were live
    expect(received()).toBe('');
    expect(raw()).not.toMatch(/rgb:|\$r|\[>0;276;0c/); // xterm.js's own replies (colours, DECRQSS, its DA2)

    // What the operator does type arrives, byte for byte.
    await page.keyboard.type('ab');
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('Control+c');
    await page.evaluate(() => {
      const data = new DataTransfer();
      data.setData('text/plain', 'pasted text');
      document.querySelector('.xterm-helper-textarea')!.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
    });
    await expect.poll(received, { timeout: 10_000 }).toContain('pasted text');
    expect(received()).toBe('ab\x1b[A\x03pasted text');
    expect(inputFrames().length).toBeGreaterThan(0);
    // Still none of the replies, after more rounds of queries.
    const more = await rounds();
    await expect.poll(rounds, { timeout: 15_000 }).toBeGreaterThan(more + 3);
    expect(received()).toBe('ab\x1b[A\x03pasted text');
    expect(raw()).not.toMatch(/rgb:|\$r|\[>0;276;0c/);
  });
});
