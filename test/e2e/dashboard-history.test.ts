import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { AuditEvent } from '@handoff/shared';
import { api, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Flags for a closed network (no background lookups) and running as root.
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// The agent: a shell loop that prints a line and honours a checkpoint each step.
const AGENT = 'i=0; while true; do handoff-agent checkpoint; i=$((i+1)); echo "step $i"; sleep 0.3; done';
// Twelve lines over ~2 s: a recording of many frames with time between them.
const PRINTER = 'for i in $(seq 1 12); do echo "replay line $i"; sleep 0.15; done';
const SCREENSHOTS = 'docs/screenshots';

interface Viewer {
  page: Page;
  context: BrowserContext;
  /** Console errors and uncaught exceptions: the dashboard must have none. */
  errors: string[];
}

describe('audit timeline and replay in a real browser', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let browser: Browser;
  let admin: string;
  let operatorToken: string;
  let operatorName: string;
  let observerToken: string;
  let operator: Viewer;
  let agentRun: string;
  const runs: string[] = [];
  const viewers: Viewer[] = [];

  beforeAll(async () => {
    hub = await startTestHub({ env: { PAUSE_SOFT_GRACE: '2s' } });
    admin = await hub.token('admin');
    operatorToken = await hub.token('operator');
    operatorName = (await api(hub.url, operatorToken, 'GET', '/api/auth/whoami')).body.name as string;
    observerToken = await hub.token('observer');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`e2e-history-${randomBytes(3).toString('hex')}`), capacity: 3 });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    operator = await viewer(1400, 900);
    mkdirSync(SCREENSHOTS, { recursive: true });
  });
  afterAll(async () => {
    for (const id of runs) await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {}).catch(() => undefined);
    for (const v of viewers) await v.context.close().catch(() => undefined);
    await browser?.close();
    const runDir = worker?.runDir;
    await worker?.stop();
    if (runDir) expect(await untilNoProcess(runDir)).toEqual([]);
    await hub?.stop();
  });

  async function viewer(width: number, height: number): Promise<Viewer> {
    const context = await browser.newContext({ viewport: { width, height }, acceptDownloads: true });
    const page = await context.newPage();
    const v: Viewer = { page, context, errors: [] };
    page.on('console', (m) => m.type() === 'error' && v.errors.push(m.text()));
    page.on('pageerror', (e) => v.errors.push(String(e)));
    viewers.push(v);
    return v;
  }
  const login = async (p: Page, token: string) => {
    await p.goto(hub.url);
    await p.getByTestId('token-input').fill(token);
    await p.getByTestId('login-button').click();
    await p.getByTestId('runs-list').waitFor({ timeout: 10_000 });
  };
  const rows = async (runId: string, token = operatorToken): Promise<AuditEvent[]> => (await api(hub.url, token, 'GET', `/api/task-runs/${runId}/events?limit=1000`)).body.events;
  const status = async (runId: string) => (await api(hub.url, operatorToken, 'GET', `/api/task-runs/${runId}`)).body.status as string;
  const control = (runId: string, body: Record<string, unknown>) => api(hub.url, operatorToken, 'POST', `/api/task-runs/${runId}/control`, body);
  const groupOf = (p: Page, action: string) => p.locator(`[data-testid="timeline-group"]:has([data-testid="timeline-row"][data-action="${action}"])`);
  const replayText = (p: Page) => p.evaluate(() => window.__handoffReplayText?.() ?? '');
  /** What a terminal shows after `output`: as terminalText reads a buffer (trailing spaces and empty lines dropped). */
  const shown = (output: string) => output.replace(/\r\n/g, '\n').split('\n').map((l) => l.trimEnd()).join('\n').replace(/\n+$/, '');
  const settledAt = async (p: Page, seq: number) => {
    const pos = p.getByTestId('replay-position');
    await expect.poll(async () => `${await pos.getAttribute('data-seq')}/${await pos.getAttribute('data-settled')}`, { timeout: 15_000 }).toBe(`${seq}/true`);
  };
  const castFrames = async (runId: string) => {
    const res = await fetch(`${hub.url}/api/task-runs/${runId}/recording.cast`, { headers: { authorization: `Bearer ${operatorToken}` } });
    const [, ...lines] = (await res.text()).trim().split('\n');
    return lines.map((l) => (JSON.parse(l) as [number, string, string])[2]);
  };
  /** The view at the top of the viewport, then the viewport (the run page's header stays above it until its tabs show the views). */
  const shoot = async (p: Page, testid: string, file: string) => {
    await p.getByTestId(testid).evaluate((el) => el.scrollIntoView({ block: 'start' }));
    await p.screenshot({ path: `${SCREENSHOTS}/${file}` });
  };
  const noHorizontalScroll = (p: Page) => p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);

  it('an operator sees a takeover → hand-back as one story under its correlation id, with names and the chain verified', async () => {
    const res = await api(hub.url, operatorToken, 'POST', '/api/task-runs', { command: { script: AGENT }, title: 'e2e timeline' });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    agentRun = res.body.id as string;
    runs.push(agentRun);
    await expect.poll(() => status(agentRun), { timeout: 15_000 }).toBe('running');
    // A few steps recorded first, so the takeover has a frame to jump to.
    await expect.poll(async () => (await castFrames(agentRun)).join('').includes('step 2'), { timeout: 15_000 }).toBe(true);
    expect((await control(agentRun, { action: 'takeover' })).status).toBe(200);
    expect((await control(agentRun, { action: 'handback', summary: 'checked the disk, carry on' })).status).toBe(200);
    const audited = await eventually('handoff.completed audited', async () => {
      const all = await rows(agentRun);
      return all.some((e) => e.action === 'handoff.completed') ? all : undefined;
    });
    const takeover = audited.find((e) => e.action === 'control.takeover')!;

    await login(operator.page, operatorToken);
    await operator.page.goto(`${hub.url}/#/runs/${agentRun}/timeline`);
    const group = groupOf(operator.page, 'control.takeover');
    await group.waitFor({ timeout: 15_000 });
    expect(await group.getAttribute('data-correlation')).toBe(takeover.correlationId);
    const story = await group.locator('[data-testid="timeline-row"]').evaluateAll((els) => els.map((el) => el.getAttribute('data-action')));
    for (const action of ['control.takeover', 'rw.grant', 'handoff.initiated', 'control.applied', 'control.handback', 'rw.revoke', 'handoff.completed']) expect(story).toContain(action);
    // Exactly the rows the API has under that correlation id, in chain order.
    expect(story).toEqual(audited.filter((e) => e.correlationId === takeover.correlationId).map((e) => e.action));
    const takeoverRow = group.locator('[data-testid="timeline-row"][data-action="control.takeover"]');
    expect(await takeoverRow.getByTestId('timeline-actor').textContent()).toBe(operatorName);
    expect(await group.locator('[data-action="control.handback"]').textContent()).toContain('checked the disk, carry on');
    const verify = operator.page.getByTestId('timeline-verify');
    await expect.poll(() => verify.getAttribute('data-ok'), { timeout: 10_000 }).toBe('true');
    expect(await verify.textContent()).toContain('Chain verified');

    await shoot(operator.page, 'timeline', 'timeline-1400.png');
  });

  it('appends a new audited step live, without a reload', async () => {
    const before = await operator.page.locator('[data-testid="timeline-row"][data-action="control.pause"]').count();
    expect(before).toBe(0);
    expect((await control(agentRun, { action: 'pause' })).status).toBe(200);
    const paused = operator.page.locator('[data-testid="timeline-row"][data-action="control.pause"]');
    await paused.waitFor({ timeout: 5_000 });
    expect(await paused.getByTestId('timeline-actor').textContent()).toBe(operatorName);
  });

  it('filters by type, actor and text', async () => {
    const page = operator.page;
    const count = () => page.locator('[data-testid="timeline-row"]').count();
    const all = await count();
    await page.getByTestId('timeline-filter-type').selectOption('rw');
    const actions = await page.locator('[data-testid="timeline-row"]').evaluateAll((els) => els.map((el) => el.getAttribute('data-action')));
    expect(actions.length).toBeGreaterThan(0);
    expect(actions.every((a) => a!.startsWith('rw.'))).toBe(true);
    await page.getByTestId('timeline-filter-type').selectOption('');
    await page.getByTestId('timeline-filter-text').fill('carry on');
    await expect.poll(() => page.locator('[data-testid="timeline-row"]').evaluateAll((els) => els.map((el) => el.getAttribute('data-action')))).toEqual(['control.handback']);
    await page.getByTestId('timeline-filter-text').fill('');
    await page.getByTestId('timeline-filter-actor').selectOption(operatorName);
    const mine = await page.locator('[data-testid="timeline-actor"]').allTextContents();
    expect(new Set(mine)).toEqual(new Set([operatorName]));
    await page.getByTestId('timeline-filter-actor').selectOption('');
    expect(await count()).toBeGreaterThanOrEqual(all);
  });

  it('downloads the JSON-lines export: its rows are the API’s rows, ended by the signed head', async () => {
    await api(hub.url, operatorToken, 'POST', `/api/task-runs/${agentRun}/cancel`, {});
    await expect.poll(() => status(agentRun), { timeout: 15_000 }).toBe('cancelled');
    // The run's last rows (exit, share end) settle; then nothing more is written.
    let stable = await eventually('audit rows settled', async () => {
      const a = await rows(agentRun);
      await new Promise((r) => setTimeout(r, 700));
      const b = await rows(agentRun);
      return a.length === b.length ? b : undefined;
    });
    const [download] = await Promise.all([operator.page.waitForEvent('download'), operator.page.getByTestId('timeline-download').click()]);
    expect(download.suggestedFilename()).toBe(`run-${agentRun}-audit.jsonl`);
    const lines = readFileSync((await download.path())!, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const { head } = lines.pop();
    stable = await rows(agentRun);
    expect(lines).toEqual(stable);
    expect(head).toMatchObject({ runId: agentRun, seq: stable.length, hash: stable.at(-1)!.hash });
  });

  it('jumps from a timeline step to the replay at the frame the terminal showed then', async () => {
    const page = operator.page;
    const page1 = (await api(hub.url, operatorToken, 'GET', `/api/task-runs/${agentRun}/events?limit=1000`)).body;
    // The takeover: the agent printed more after the hand-back, so the frame is not the last.
    const takeover = (page1.events as AuditEvent[]).find((e) => e.action === 'control.takeover')!;
    const frame = page1.frames[String(takeover.seq)] as number;
    expect(frame).toBeGreaterThan(0);
    await page.locator(`[data-testid="timeline-row"][data-seq="${takeover.seq}"] [data-testid="timeline-replay-link"]`).click();
    await page.getByTestId('replay').waitFor({ timeout: 10_000 });
    expect(page.url()).toContain(`/replay?at=${frame}`);
    await settledAt(page, frame);
    // The takeover redraws the screen (escape sequences), so rather than the whole text: the
    // replay shows the agent's last step printed up to that frame, and none printed after it.
    const frames = await castFrames(agentRun);
    const lastStep = (text: string) => Math.max(0, ...[...text.matchAll(/step (\d+)/g)].map((m) => Number(m[1])));
    const upTo = lastStep(frames.slice(0, frame).join(''));
    expect(upTo).toBeGreaterThan(0);
    expect(lastStep(frames.join(''))).toBeGreaterThan(upTo); // the run printed more later: the seek mattered
    expect(lastStep(await replayText(page))).toBe(upTo);
  });

  it('an observer reads the timeline too, without what the operator wrote for the agent', async () => {
    const observer = await viewer(1400, 900);
    await login(observer.page, observerToken);
    await observer.page.goto(`${hub.url}/#/runs/${agentRun}/timeline`);
    const group = groupOf(observer.page, 'control.takeover');
    await group.waitFor({ timeout: 15_000 });
    await observer.page.getByTestId('timeline-observer-note').waitFor();
    const handback = group.locator('[data-action="control.handback"]');
    expect(await handback.textContent()).toContain('hidden from observers');
    expect(await observer.page.content()).not.toContain('checked the disk');
    expect(await group.getAttribute('data-correlation')).toBe((await rows(agentRun)).find((e) => e.action === 'control.takeover')!.correlationId);
    const verify = observer.page.getByTestId('timeline-verify');
    await expect.poll(() => verify.getAttribute('data-ok'), { timeout: 10_000 }).toBe('true');
    expect(observer.errors).toEqual([]);
  });

  it('replays a finished run: playing reproduces its output, seeking lands on the frame asked for', async () => {
    const res = await api(hub.url, operatorToken, 'POST', '/api/task-runs', { command: { script: PRINTER }, title: 'e2e replay' });
    const runId = res.body.id as string;
    runs.push(runId);
    await expect.poll(() => status(runId), { timeout: 20_000 }).toBe('succeeded');
    const frames = await castFrames(runId);
    expect(frames.length).toBeGreaterThan(4);
    const page = operator.page;
    await page.goto(`${hub.url}/#/runs/${runId}/replay`);
    await settledAt(page, 0);
    expect(await replayText(page)).toBe('');

    await page.getByTestId('replay-speed-16').click();
    await page.getByTestId('replay-play').click();
    await settledAt(page, frames.length);
    expect(await replayText(page)).toBe(shown(frames.join('')));
    expect(await replayText(page)).toContain('replay line 12');

    // Seeking back with the bar, then by link: exactly frames 1..k are shown.
    const k = Math.floor(frames.length / 2);
    await page.getByTestId('replay-seek').fill(String(k));
    await settledAt(page, k);
    expect(await replayText(page)).toBe(shown(frames.slice(0, k).join('')));
    await page.goto(`${hub.url}/#/runs/${runId}/replay?at=2`);
    await settledAt(page, 2);
    expect(await replayText(page)).toBe(shown(frames.slice(0, 2).join('')));

    await page.getByTestId('replay-seek').fill(String(frames.length));
    await settledAt(page, frames.length);
    await shoot(page, 'replay', 'replay-1400.png');

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('replay-download').click()]);
    const cast = readFileSync((await download.path())!, 'utf8').trim().split('\n');
    expect(JSON.parse(cast[0]!)).toMatchObject({ version: 2, width: 120, height: 32, env: { TERM: 'screen-256color', SHELL: '/bin/sh' } });
    expect(cast.slice(1).map((l) => (JSON.parse(l) as string[])[2]).join('')).toBe(frames.join(''));

    // Narrow screens: the same views fit a phone's width.
    const phone = await viewer(390, 844);
    await login(phone.page, operatorToken);
    await phone.page.goto(`${hub.url}/#/runs/${runId}/replay?at=${frames.length}`);
    await settledAt(phone.page, frames.length);
    expect(await phone.page.getByTestId('replay').evaluate((el) => el.scrollWidth <= el.clientWidth)).toBe(true);
    await shoot(phone.page, 'replay', 'replay-390.png');
    expect(await noHorizontalScroll(phone.page)).toBe(true);
    await phone.page.goto(`${hub.url}/#/runs/${agentRun}/timeline`);
    await groupOf(phone.page, 'control.takeover').waitFor({ timeout: 15_000 });
    expect(await phone.page.getByTestId('timeline').evaluate((el) => el.scrollWidth <= el.clientWidth)).toBe(true);
    await shoot(phone.page, 'timeline', 'timeline-390.png');
    // The whole page, not only the panel: no horizontal scroll on a phone.
    expect(await noHorizontalScroll(phone.page)).toBe(true);

    expect(operator.errors).toEqual([]);
    expect(phone.errors).toEqual([]);
  });
});
