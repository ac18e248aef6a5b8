// When the desired control state last changed: the hub reports the push → applied delay.
export const name = '0002-control-timing';

export const up: string[] = [`alter table runs add column control_changed_at timestamptz null`];
