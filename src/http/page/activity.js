// The activity feed: drains (who, when, how many in flight), sign-ins, fires and finished
// runs, newest first, from the audit and run messages of /api/events (and, when its socket
// opens, the gateway's recent ones from its `activity` message).
'use strict';

const ACTIVITY_MAX = 50;

// Audit event → [kind, words]; the rest of the audit stream (tickets, token checks) is
// left out.
const AUDIT_WORDS = {
  drain_begin: ['drain', (a) => `Drain begun by ${a.principal || '?'} · ${inFlight(a)}${a.changed === false ? ' (already draining)' : ''}`],
  drain_cancel: ['drain', (a) => `Drain cancelled by ${a.principal || '?'} · ${inFlight(a)}${a.changed === false ? ' (was not draining)' : ''}`],
  drain_expired: ['drain', (a) => `Drain marker of ${a.principal || '?'} expired after ${a.age_seconds} s · ${inFlight(a)}`],
  login_success: ['login', (a) => `${a.principal || 'someone'} signed in from ${a.ip || '?'}`],
  login_failure: ['login bad', (a) => `Sign-in refused for ${a.username || '?'} from ${a.ip || '?'} (${a.reason || 'refused'})`],
  logout: ['login', (a) => `Signed out from ${a.ip || '?'}`],
  cron_fire_accepted: ['fire', (a) => `Fire of ${jobName(a.job_id)}: ${String(a.outcome).replace('_', ' ')}`],
  cron_fire_rejected: ['fire bad', (a) => `Fire ${a.job_id ? 'of ' + jobName(a.job_id) + ' ' : ''}refused: ${a.reason}`],
};

function inFlight(a) {
  const n = a.active_agents;
  return n === undefined ? 'in flight unknown' : `${n} turn${n === 1 ? '' : 's'} in flight`;
}

function addActivity(kind, when, text) {
  const list = $('activity');
  const empty = list.querySelector('.empty');
  if (empty) empty.remove();
  const li = el('li', {class: 'act-' + kind.split(' ').join(' act-')});
  li.append(el('time', {datetime: when}, fmtClock(when)));
  li.append(el('span', {}, text));
  list.prepend(li);
  while (list.children.length > ACTIVITY_MAX) list.lastElementChild.remove();
}

// The same event may come twice: in the `activity` message a socket opens with (the
// gateway's recent activity) and live, or again after a reconnect. Each is shown once.
const activitySeen = new Set();
function firstSight(msg) {
  const key = JSON.stringify(msg);
  if (activitySeen.has(key)) return false;
  activitySeen.add(key);
  if (activitySeen.size > 4 * ACTIVITY_MAX) activitySeen.delete(activitySeen.values().next().value);
  return true;
}

function showAudit(a) {
  const words = AUDIT_WORDS[a.event];
  if (words && firstSight(a)) addActivity(words[0], a.ts, words[1](a));
}

function showRunEnd(msg) {
  if (!msg.finished_at || !firstSight(msg)) return;
  const bad = msg.status === 'completed' ? '' : ' bad';
  addActivity('run' + bad, msg.finished_at, `Run of ${jobName(msg.job_id)} ${msg.status}`);
}

onEvent('audit', showAudit);
onEvent('run', showRunEnd);
// What happened before this page opened (or while its socket was away), oldest first.
onEvent('activity', (msg) => {
  for (const m of msg.recent) (m.type === 'audit' ? showAudit : showRunEnd)(m);
});
