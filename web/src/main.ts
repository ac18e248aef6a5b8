import { mount } from 'svelte';
import App from './App.svelte';
import { consumeTokenFromFragment } from './lib/token-storage.js';

// Before the app reads the hash: `#token=...` is a login link, not a route.
consumeTokenFromFragment();

const target = document.getElementById('app');
if (!target) throw new Error('index.html has no #app element');
mount(App, { target });
