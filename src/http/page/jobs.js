// Cron jobs: the table (next run in the cron zone, named), create and edit in a dialog
// whose schedule is previewed as you type (GET api/jobs/preview, evaluated by the server
// in cron.timezone), pause, resume, run now, delete, and each run's output and error.
'use strict';

let selectedJob = null;
let jobsById = new Map();
let editing = null;
let jobOpener = null;

function jobName(id) { const j = jobsById.get(id); return j ? j.name : id; }

function actionButton(label, handler, extra) {
  const b = el('button', Object.assign({type: 'button', class: 'small'}, extra || {}), label);
  b.onclick = (e) => { e.stopPropagation(); handler(); };
  return b;
}

function jobRow(j) {
  const tr = el('tr', {'aria-selected': String(j.id === selectedJob), 'data-job': j.id});
  const name = el('button', {type: 'button', class: 'link', title: 'Show the runs of ' + j.name}, j.name);
  name.onclick = () => selectJob(j.id);
  const first = el('td');
  first.append(name);
  tr.append(first);
  for (const text of [j.schedule, j.state, fmtZoned(j.next_run_at), j.last_status || '–']) tr.append(el('td', {}, text));
  tr.children[4].title = j.last_error || '';
  const actions = el('td', {class: 'row-actions'});
  actions.append(actionButton('Edit', () => openJobForm(j), {'aria-label': 'Edit ' + j.name}));
  actions.append(j.enabled
    ? actionButton('Pause', () => jobAction(j, 'pause'), {'aria-label': 'Pause ' + j.name})
    : actionButton('Resume', () => jobAction(j, 'resume'), {'aria-label': 'Resume ' + j.name}));
  actions.append(actionButton('Run now', () => jobAction(j, 'run'), {'aria-label': 'Run ' + j.name + ' now'}));
  actions.append(actionButton('Delete', () => deleteJob(j), {'aria-label': 'Delete ' + j.name, class: 'small warn'}));
  tr.append(actions);
  tr.onclick = () => selectJob(j.id);
  return tr;
}

async function loadJobs() {
  const body = $('jobs');
  try {
    const {jobs} = await api('api/jobs');
    jobsById = new Map(jobs.map((j) => [j.id, j]));
    body.replaceChildren();
    if (!jobs.length) {
      const tr = el('tr');
      tr.append(el('td', {colspan: '6', class: 'muted'}, 'No jobs yet: “New job” makes one.'));
      body.append(tr);
    }
    for (const j of jobs) body.append(jobRow(j));
    $('jobs-error').textContent = '';
  } catch (e) { $('jobs-error').textContent = e.message; }
}

function selectJob(id) {
  selectedJob = id;
  $('runs-of').textContent = '(' + jobName(id) + ')';
  for (const tr of $('jobs').querySelectorAll('tr[data-job]')) tr.setAttribute('aria-selected', String(tr.dataset.job === id));
  loadRuns(id);
}

async function jobAction(j, action) {
  $('jobs-error').textContent = '';
  try {
    await api('api/jobs/' + encodeURIComponent(j.id) + '/' + action, {method: 'POST'});
    if (action === 'run') selectJob(j.id);
    await loadJobs();
  } catch (e) { $('jobs-error').textContent = e.message; }
}

async function deleteJob(j) {
  if (!await askConfirm('Delete “' + j.name + '”?', 'The job and the record of its runs are removed.', 'Delete')) return;
  try {
    await api('api/jobs/' + encodeURIComponent(j.id), {method: 'DELETE'});
    if (selectedJob === j.id) { selectedJob = null; $('runs-of').textContent = '(select a job)'; $('runs').replaceChildren(); }
    await loadJobs();
  } catch (e) { $('jobs-error').textContent = e.message; }
}

function runItem(r, open) {
  const li = el('li');
  const details = el('details', open ? {open: ''} : {});
  const took = r.finished_at ? ' · ' + ((new Date(r.finished_at) - new Date(r.started_at)) / 1000).toFixed(1) + ' s' : '';
  const summary = el('summary', {}, fmtZoned(r.started_at) + ' · ');
  summary.append(el('span', {class: 'run-status s-' + r.status}, r.status));
  summary.append(document.createTextNode(took));
  details.append(summary);
  details.append(el('pre', {class: 'run-output'}, r.output || (r.status === 'running' ? '(running…)' : '(no output)')));
  if (r.error) details.append(el('p', {class: 'run-error error'}, r.error));
  li.append(details);
  return li;
}

async function loadRuns(id) {
  const list = $('runs');
  try {
    const {runs} = await api('api/jobs/' + encodeURIComponent(id) + '/runs?limit=10');
    if (id !== selectedJob) return;
    list.replaceChildren();
    if (!runs.length) list.append(el('li', {class: 'muted'}, 'No runs yet.'));
    runs.forEach((r, i) => list.append(runItem(r, i === 0)));
  } catch (e) { list.replaceChildren(el('li', {class: 'error'}, e.message)); }
}

// ---- the job dialog -------------------------------------------------------------------

let previewTimer = null;
let previewSeq = 0;

async function preview() {
  const text = $('job-schedule').value;
  const list = $('job-preview');
  const seq = ++previewSeq;
  if (!text.trim()) { list.replaceChildren(); $('job-preview-h').textContent = 'Next runs'; return; }
  try {
    const p = await api('api/jobs/preview?count=5&schedule=' + encodeURIComponent(text));
    if (seq !== previewSeq) return;
    $('job-preview-h').textContent = 'Next runs in ' + p.timezone;
    list.replaceChildren(...p.next_runs.map((s) => el('li', {'data-at': s.at, title: s.at}, zoneFormat ? fmtZoned(s.at) : s.local)));
    if (!p.next_runs.length) list.replaceChildren(el('li', {class: 'muted'}, 'It would never run again.'));
  } catch (e) {
    if (seq !== previewSeq) return;
    $('job-preview-h').textContent = 'Next runs';
    list.replaceChildren(el('li', {class: 'error'}, e.message));
  }
}

function openJobForm(job) {
  editing = job || null;
  jobOpener = document.activeElement;
  $('job-title').textContent = job ? 'Edit “' + job.name + '”' : 'New job';
  $('job-name').value = job ? job.name : '';
  $('job-schedule').value = job ? job.schedule : '';
  $('job-prompt').value = job ? job.prompt : '';
  $('job-repeat').value = job && job.repeat.times ? String(job.repeat.times) : '';
  $('job-deliver').value = job ? job.deliver : 'local';
  $('job-error').textContent = '';
  $('job-zone').textContent = cronZone;
  $('job-dialog').showModal();
  $('job-name').focus();
  preview();
}

// The body to send: everything for a new job; only what changed for an edit.
function jobBody() {
  const repeat = $('job-repeat').value.trim();
  const v = {name: $('job-name').value, schedule: $('job-schedule').value, prompt: $('job-prompt').value,
             deliver: $('job-deliver').value.trim() || 'local', repeat: repeat ? Number(repeat) : null};
  if (!editing) return v;
  const was = {name: editing.name, schedule: editing.schedule, prompt: editing.prompt, deliver: editing.deliver,
               repeat: editing.repeat.times || null};
  return Object.fromEntries(Object.entries(v).filter(([k, x]) => x !== was[k]));
}

async function saveJob(e) {
  e.preventDefault();
  $('job-error').textContent = '';
  const body = jobBody();
  try {
    let id = editing && editing.id;
    if (!editing) id = (await sendJson('api/jobs', 'POST', body)).job.id;
    else if (Object.keys(body).length) await sendJson('api/jobs/' + encodeURIComponent(id), 'PATCH', body);
    $('job-dialog').close();
    await loadJobs();
    selectJob(id);
  } catch (err) { $('job-error').textContent = err.message; }
}

starters.push(() => {
  $('jobs-zone').textContent = '(' + cronZone + ')';
  $('job-new').onclick = () => openJobForm(null);
  $('job-cancel').onclick = () => $('job-dialog').close();
  $('job-form').onsubmit = saveJob;
  $('job-schedule').oninput = () => { clearTimeout(previewTimer); previewTimer = setTimeout(preview, 250); };
  $('job-dialog').addEventListener('close', () => {
    clearTimeout(previewTimer);
    (jobOpener && jobOpener.isConnected ? jobOpener : $('job-new')).focus();
  });
  loadJobs();
});

// A job made, changed or deleted anywhere (the API, another page): the table follows.
onEvent('job', () => loadJobs());

onEvent('run', (msg) => {
  loadJobs();
  if (msg.job_id === selectedJob) loadRuns(selectedJob);
});
