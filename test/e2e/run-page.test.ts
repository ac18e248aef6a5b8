import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { ApprovalRequest, AuditEvent, Run } from '@handoff/shared';
import { api } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// The agent: prints a numbered line and honours a checkpoint each step.
const AGENT = 'i=0; while true; do handoff-agent checkpoint; i=$((i+1)); echo "step $i"; sleep 0.2; done';
const SHOTS = 'docs/screenshots';

interface Viewer {
  page: Page;
  /** Console errors and uncaught exceptions of the page. */
  errors: string[];
  token: string;
  id: string;
  name: string;
}

// The run page (issue 13, cockpit-run): terminal first, the primary action per state, presence
// across two hub nodes (Redis) with a per-viewer kick, isolated user text, the read-only hint.
describe('run page in a real browser: terminal first, presence across two nodes, kick, primary action', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let worker: WorkerProcess;
  let browser: Browser;
  let admin: string;
  let operator: Viewer;
  /** An observer whose name carries a right-to-left override, watching through node B. */
  let rtl: Viewer;
  /** An observer on node A who keeps watching after the kick. */
  let other: Viewer;
  let runId: string;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    db = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-test-${randomBytes(4).toString('hex')}`, PAUSE_SOFT_GRACE: '2s', SWEEP_INTERVAL: '200ms' };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    admin = await a.token('admin');
    worker = startWorker({ hubUrl: b.url, token: await b.workerToken(`e2e-run-page-${randomBytes(3).toString('hex')}`) });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const suffix = randomBytes(3).toString('hex');
    operator = await viewer(`op-${suffix}`, 'operator', 1400, 900);
    rtl = await viewer(`\u202Eeve-${suffix}`, 'observer', 1280, 900);
    other = await viewer(`obs-${suffix}`, 'observer', 1280, 900);
  });
  afterAll(async () => {
    if (runId) await api(a.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {}).catch(() => undefined);
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    const runDir = worker?.runDir;
    await worker?.stop();
    if (runDir) expect(await untilNoProcess(runDir)).toEqual([]);
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  async function viewer(name: string, role: 'operator' | 'observer', width: number, height: number): Promise<Viewer> {
    const { user, token } = await a.auth.addUser(name, role);
    const context = await browser.newContext({ viewport: { width, height } });
    contexts.push(context);
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('console', (m) => void (m.type() === 'error' && errors.push(m.text())));
    page.on('pageerror', (e) => void errors.push(String(e)));
    return { page, errors, token, id: user.id, name };
  }
  async function open(v: Viewer, hubUrl: string) {
    await v.page.goto(hubUrl);
    await v.page.getByTestId('token-input').fill(v.token);
    await v.page.getByTestId('login-button').click();
    await v.page.getByTestId('runs-list').waitFor({ timeout: 10_000 });
    await v.page.goto(`${hubUrl}/#/runs/${runId}`);
  }
  const terminalText = (p: Page) => p.evaluate(() => (window as unknown as { __handoffTerminalText?: () => string }).__handoffTerminalText?.() ?? '');
  const lastStep = async (p: Page) => Math.max(0, ...[...(await terminalText(p)).matchAll(/^step (\d+)$/gm)].map((m) => Number(m[1])));
  const viewerRow = (p: Page, userId: string) => p.locator(`[data-testid="presence-viewer"][data-user-id="${userId}"]`);
  const presentIds = (p: Page) => p.getByTestId('presence-viewer').evaluateAll((els) => els.map((e) => e.getAttribute('data-user-id')).sort());
  const primary = (p: Page) => p.getByTestId('control-panel').getAttribute('data-primary');
  const getRun = async () => (await api(a.url, admin, 'GET', `/api/task-runs/${runId}`)).body as Run;

  it('at 1400×900 the terminal is in the first screen with at least 20 rows; names, not ids; Pause is the primary action', async () => {
    const res = await api(a.url, operator.token, 'POST', '/api/task-runs', { command: { script: AGENT }, title: 'e2e run page' });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    runId = res.body.id as string;
    await open(operator, a.url);
    await expect.poll(() => lastStep(operator.page), { timeout: 20_000 }).toBeGreaterThan(1);

    const box = await operator.page.getByTestId('terminal-panel').boundingBox();
    expect(box).not.toBeNull();
    expect(box!.y).toBeLessThan(900 * 0.4);
    expect(box!.y + box!.height).toBeLessThanOrEqual(900);
    const rows = await operator.page.locator('[data-testid="terminal"] .xterm-rows > div').count();
    expect(rows).toBeGreaterThanOrEqual(20);

    await expect.poll(() => primary(operator.page), { timeout: 10_000 }).toBe('pause');
    expect(await operator.page.getByTestId('pause-button').getAttribute('class')).toContain('primary');
    expect(await operator.page.getByTestId('resume-button').count()).toBe(0);

    // Details: the worker's and the creator's names, not their ids.
    await operator.page.getByTestId('tab-details').click();
    const run = await getRun();
    expect(run.workerName).toMatch(/^e2e-run-page-/);
    await operator.page.getByTestId('run-summary').waitFor({ timeout: 5000 });
    expect(await operator.page.getByTestId('run-worker').textContent()).toBe(run.workerName);
    expect(await operator.page.getByTestId('run-creator').textContent()).toBe(operator.name);
    await operator.page.getByTestId('tab-terminal').click();
    await operator.page.getByTestId('terminal-panel').waitFor();
  });

  it('two viewers on two hub nodes see each other in presence within 1 s', async () => {
    await viewerRow(operator.page, operator.id).waitFor({ timeout: 5000 });
    // The operator (node A) waits for the observer, who opens the run through node B.
    const seenByOperator = viewerRow(operator.page, rtl.id).waitFor({ timeout: 30_000 }).then(() => Date.now());
    await open(rtl, b.url);
    await viewerRow(rtl.page, rtl.id).waitFor({ timeout: 15_000 });
    const joined = Date.now();
    await viewerRow(rtl.page, operator.id).waitFor({ timeout: 1000 });
    expect((await seenByOperator) - joined).toBeLessThan(1000);

    // A third viewer, on node A: both others (one per node) see them within 1 s as well.
    const seenOnA = viewerRow(operator.page, other.id).waitFor({ timeout: 30_000 }).then(() => Date.now());
    const seenOnB = viewerRow(rtl.page, other.id).waitFor({ timeout: 30_000 }).then(() => Date.now());
    await open(other, a.url);
    await viewerRow(other.page, other.id).waitFor({ timeout: 15_000 });
    const joinedToo = Date.now();
    expect((await seenOnA) - joinedToo).toBeLessThan(1000);
    expect((await seenOnB) - joinedToo).toBeLessThan(1000);
    expect(await presentIds(rtl.page)).toEqual([operator.id, rtl.id, other.id].sort());
  });

  it('a name with U+202E is isolated: the role badge beside it still reads and sits where it should', async () => {
    const row = viewerRow(operator.page, rtl.id);
    const name = row.getByTestId('presence-name');
    const role = row.getByTestId('presence-role');
    expect(await name.textContent()).toBe(rtl.name);
    expect(await role.textContent()).toBe('observer');
    expect(await name.evaluate((el) => getComputedStyle(el).unicodeBidi)).toBe('isolate');
    // Isolated, the override cannot pull the badge to the left of the name.
    const [nameBox, roleBox] = [await name.boundingBox(), await role.boundingBox()];
    expect(roleBox!.x).toBeGreaterThan(nameBox!.x + nameBox!.width - 1);
  });

  it('an observer typing into the read-only terminal gets the hint; its button asks for write access (an approval request)', async () => {
    await expect.poll(() => lastStep(other.page), { timeout: 15_000 }).toBeGreaterThan(0);
    expect(await other.page.getByTestId('readonly-hint').count()).toBe(0);
    await other.page.getByTestId('terminal').click();
    await other.page.keyboard.type('ls');
    await other.page.getByTestId('readonly-hint').waitFor({ timeout: 5000 });
    expect(await other.page.getByTestId('readonly-hint').textContent()).toContain('Read-only — ask for write access');
    await other.page.getByTestId('readonly-request').click();
    await other.page.getByTestId('readonly-requested').waitFor({ timeout: 10_000 });
    const pending = (await api(a.url, admin, 'GET', '/api/approvals?status=pending')).body.approvals as ApprovalRequest[];
    const mine = pending.filter((p) => p.runId === runId && p.action === 'rw.grant' && p.requester.id === other.id);
    expect(mine).toHaveLength(1);
    // Nothing was typed into the run meanwhile: no grant exists.
    expect((await getRun()).writeGrants).toEqual([]);
  });

  it('a kick removes exactly one viewer: they are told why and cut off, the others keep watching', async () => {
    await viewerRow(operator.page, rtl.id).getByTestId('presence-kick').click();
    const notice = rtl.page.getByTestId('kicked-notice');
    await notice.waitFor({ timeout: 5000 });
    expect(await notice.textContent()).toContain(`${operator.name} removed you from this run`);
    await expect.poll(() => presentIds(operator.page), { timeout: 2000 }).toEqual([operator.id, other.id].sort());
    await expect.poll(() => presentIds(other.page), { timeout: 2000 }).toEqual([operator.id, other.id].sort());

    // The other observer receives new output after the kick.
    const before = await lastStep(other.page);
    await expect.poll(() => lastStep(other.page), { timeout: 10_000 }).toBeGreaterThan(before + 2);

    // Audited, and the kicked user cannot come straight back (through either node).
    const events = (await api(a.url, admin, 'GET', `/api/task-runs/${runId}/events`)).body.events as AuditEvent[];
    const kick = events.find((e) => e.action === 'presence.kick');
    expect(kick).toMatchObject({ actorId: operator.id, result: 'ok', metadata: { userId: rtl.id, connections: 1 } });
    await rtl.page.reload();
    await expect.poll(() => rtl.page.getByTestId('run-error').textContent(), { timeout: 10_000 }).toContain('removed you from this run');
    expect(await presentIds(operator.page)).toEqual([operator.id, other.id].sort());
  });

  it('the primary action follows the state: paused → Resume, taken over by me → Hand back (screenshots at 1400 and 390)', async () => {
    await operator.page.getByTestId('pause-button').click();
    await expect.poll(() => primary(operator.page), { timeout: 10_000 }).toBe('resume');
    expect(await operator.page.getByTestId('resume-button').getAttribute('class')).toContain('primary');
    expect(await operator.page.getByTestId('pause-button').count()).toBe(0);

    await operator.page.getByTestId('takeover-button').click();
    await expect.poll(() => primary(operator.page), { timeout: 10_000 }).toBe('handback');
    await expect.poll(() => operator.page.getByTestId('control-state').getAttribute('data-applied'), { timeout: 15_000 }).toBe('true');
    expect(await operator.page.getByTestId('resume-button').count()).toBe(0);
    await operator.page.getByTestId('handback-start').waitFor();
    // Everyone else sees who controls, and no control action as primary.
    await expect.poll(() => other.page.getByTestId('control-controller').textContent(), { timeout: 10_000 }).toContain(operator.name);
    expect(await primary(other.page)).toBe('');
    await viewerRow(other.page, operator.id).getByTestId('presence-controls').waitFor({ timeout: 5000 });
    // The controller cannot be kicked (the run would stay taken over with nobody at the keys).
    const kickController = await api(a.url, admin, 'POST', `/api/task-runs/${runId}/viewers/kick`, { userId: operator.id });
    expect(kickController.status, JSON.stringify(kickController.body)).toBe(409);

    await operator.page.getByTestId('terminal-input-indicator').waitFor({ timeout: 10_000 });
    // With the takeover banner and the grant strip above it, the terminal still ends within the first screen.
    await expect.poll(async () => {
      const box = (await operator.page.getByTestId('terminal-panel').boundingBox())!;
      return box.y + box.height;
    }).toBeLessThanOrEqual(900);
    await operator.page.screenshot({ path: `${SHOTS}/run-takeover-1400.png` });
    await operator.page.setViewportSize({ width: 390, height: 844 });
    await operator.page.getByTestId('terminal-panel').waitFor();
    // Nothing of the page (header included) reaches past the viewport: no horizontal scroll.
    // The terminal refits to the new width on its next resize observation: poll, do not race it.
    const overflow = () =>
      operator.page.evaluate(() => {
        const wide = [...document.body.querySelectorAll('*')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5);
        return { fits: document.documentElement.scrollWidth <= window.innerWidth, wide: wide.slice(0, 5).map((e) => `${e.tagName}.${e.className}`) };
      });
    await expect.poll(overflow, { timeout: 5000 }).toEqual({ fits: true, wide: [] });
    await operator.page.screenshot({ path: `${SHOTS}/run-takeover-390.png` });
    await operator.page.setViewportSize({ width: 1400, height: 900 });

    // Full screen and back.
    await operator.page.getByTestId('terminal-fullscreen').click();
    const full = await operator.page.getByTestId('terminal-panel').boundingBox();
    expect(full!.height).toBeGreaterThan(850);
    await operator.page.keyboard.press('Escape');
    await expect.poll(async () => (await operator.page.getByTestId('terminal-panel').boundingBox())!.height).toBeLessThan(850);
  });

  it('a cancelled run reads as cancelled, not as a crash: Replay is the primary action, no red exit code', async () => {
    const handback = await api(a.url, operator.token, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary: 'done looking' });
    expect(handback.status, JSON.stringify(handback.body)).toBe(200);
    const cancelled = await api(a.url, operator.token, 'POST', `/api/task-runs/${runId}/cancel`, {});
    expect(cancelled.status).toBe(200);
    await expect.poll(() => primary(operator.page), { timeout: 15_000 }).toBe('replay');
    await expect.poll(() => operator.page.getByTestId('run-status').textContent(), { timeout: 15_000 }).toBe('cancelled');
    // "cancelled" appears once (the status badge): no control state or second notice repeating it.
    expect(await operator.page.getByTestId('control-state').count()).toBe(0);
    const head = `${await operator.page.getByTestId('run-head').innerText()}\n${await operator.page.getByTestId('control-panel').innerText()}`;
    expect(head.match(/cancelled/g)?.length, head).toBe(1);
    await expect.poll(async () => (await getRun()).exitCode, { timeout: 15_000 }).not.toBeNull();
    await operator.page.getByTestId('tab-details').click();
    const exit = operator.page.getByTestId('run-exit-code');
    await exit.waitFor();
    expect(await exit.getAttribute('data-tone')).toBe('neutral');
    expect(await exit.evaluate((el) => getComputedStyle(el).color)).not.toBe('rgb(248, 81, 73)');
  });

  it('no console errors on any page', () => {
    // The kicked viewer's refused reload answers over the socket, not as a failed resource.
    for (const v of [operator, rtl, other]) expect(v.errors, v.name).toEqual([]);
  });
});
