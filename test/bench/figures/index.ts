import type { Figure } from '../lib/figure.js';
import { auditAppends } from './audit-appends.js';
import { coldStart } from './cold-start.js';
import { controlPush1, controlPush2 } from './control-push.js';
import { fanOut } from './fan-out.js';
import { firstFrame } from './first-frame.js';
import { keystroke } from './keystroke.js';
import { revokeTwoNodes } from './revoke.js';
import { workersPerNode } from './workers-per-node.js';

/** The suite, in the order it runs (`pnpm bench <name…>` runs a subset). */
export const figures: Figure[] = [controlPush1, controlPush2, firstFrame, keystroke, auditAppends, fanOut, workersPerNode, revokeTwoNodes, coldStart];
