// The police page: incidents live from IDPS (an event stream that resumes with Last-Event-ID), their detail with
// sources, snapshots and audit trail, lifecycle actions with version checks, cameras with counts and queues, and
// the municipal delivery lag.
"use strict";

const E = V2X.el;
const S = (v, p) => V2X.strip(v, p);
const state = { incidents: new Map(), markers: new Map(), map: null, open: null, openVersion: 0, dirty: false };
const ACTIONS = [["confirm", "Confirm"], ["dispatch", "Dispatch"], ["on_scene", "On scene"], ["clear", "Clear"],
  ["false_alarm", "False alarm"]];
const SEVERITY_COLOUR = { SEVERITY_MAJOR: "#b00020", SEVERITY_NORMAL: "#e07b00", SEVERITY_MINOR: "#2f6fb0" };

function layout(app) {
  app.append(
    E("div", {}, E("section", {}, E("div", { id: "map" })),
      E("section", { id: "detail" }, E("p", { className: "muted" }, "Select an incident."))),
    E("div", {},
      E("section", { className: "scroll-short" }, E("h2", {}, "Incidents ",
        E("span", { className: "muted", id: "stream-state" }, "connecting…")),
      E("table", { id: "incidents" }, E("thead", {}, E("tr", {}, E("th", {}, "type"), E("th", {}, "status"),
        E("th", {}, "severity"), E("th", {}, "conf."), E("th", {}, "sources"), E("th", {}, "updated"))),
      E("tbody", {}))),
      E("section", {}, E("h2", {}, "Municipal delivery"), E("div", { id: "municipal" }, "…")),
      E("section", {}, E("h2", {}, "Cameras"), E("div", { id: "cameras" }, E("p", { className: "muted" }, "…")))));
}

function scheduleRender() {
  if (state.dirty) return;
  state.dirty = true;
  requestAnimationFrame(() => { state.dirty = false; renderList(); });
}

function renderList() {
  const body = V2X.clear(document.querySelector("#incidents tbody"));
  const sorted = [...state.incidents.values()].sort((a, b) => (b.updated_at || "").localeCompare(a.updated_at || ""));
  for (const i of sorted) {
    body.append(E("tr", { "data-id": i.id, "data-version": i.version || 0, "data-status": S(i.status, /^INCIDENT_STATUS_/),
      className: state.open === i.id ? "selected" : null, onclick: () => openIncident(i.id) },
      E("td", { className: "type" }, S(i.type, /^EVENT_TYPE_/)),
      E("td", { className: "status" }, S(i.status, /^INCIDENT_STATUS_/)),
      E("td", { className: "severity sev-" + S(i.severity, /^SEVERITY_/).toUpperCase() }, S(i.severity, /^SEVERITY_/)),
      E("td", {}, Math.round((i.confidence || 0) * 100) + "%"),
      E("td", {}, (i.source_count || 0) + " · " + (i.source_kinds || []).map((k) => S(k, /^SOURCE_KIND_/)).join(", ")),
      E("td", {}, V2X.time(i.updated_at))));
  }
}

function upsert(i) {
  state.incidents.set(i.id, i);
  const pos = [i.position ? i.position.lat || 0 : 0, i.position ? i.position.lon || 0 : 0];
  let m = state.markers.get(i.id);
  const colour = SEVERITY_COLOUR[i.severity] || "#555";
  if (!m) {
    m = L.circleMarker(pos, { radius: 9, weight: 2, color: "#fff", fillColor: colour, fillOpacity: 0.95 })
      .on("click", () => openIncident(i.id)).addTo(state.map);
    state.markers.set(i.id, m);
  }
  m.setLatLng(pos).setStyle({ fillColor: colour });
  m.bindTooltip(S(i.type, /^EVENT_TYPE_/) + " · " + S(i.status, /^INCIDENT_STATUS_/));
  if (state.open === i.id && Number(i.version) > state.openVersion) staleNotice(i);
  scheduleRender();
}

function remove(id) {
  state.incidents.delete(id);
  const m = state.markers.get(id);
  if (m) { m.remove(); state.markers.delete(id); }
  scheduleRender();
}

function staleNotice(i) {
  const n = document.getElementById("stale");
  if (!n) return;
  V2X.clear(n).append("Changed meanwhile: now " + S(i.status, /^INCIDENT_STATUS_/) + ", version " + i.version + ". ",
    E("button", { className: "secondary", onclick: () => openIncident(i.id) }, "Show the current state"));
}

function stream() {
  const label = document.getElementById("stream-state");
  const es = new EventSource("/api/v1/incidents/stream");
  es.onopen = () => { label.textContent = "connected"; };
  es.addEventListener("snapshot_end", () => { label.textContent = "live"; });
  es.addEventListener("heartbeat", () => { label.textContent = "live"; });
  es.onerror = async () => {
    label.textContent = "reconnecting…";
    // Refused for good (the session ended, e.g. its key was revoked): back to the sign-in form.
    if (es.readyState === EventSource.CLOSED && !(await V2X.whoami()).signed_in) location.reload();
  };
  es.addEventListener("resync", () => {
    document.body.dataset.resyncs = String(Number(document.body.dataset.resyncs || 0) + 1);
    for (const id of [...state.incidents.keys()]) remove(id);
  });
  es.addEventListener("new", (e) => upsert(JSON.parse(e.data)));
  es.addEventListener("update", (e) => upsert(JSON.parse(e.data)));
  es.addEventListener("end", (e) => remove(JSON.parse(e.data).id));
  es.addEventListener("failure", (e) => { label.textContent = "stream: " + JSON.parse(e.data).error; });
}

function auditLine(a) {
  const change = a.from_status || a.to_status
    ? S(a.from_status, /^INCIDENT_STATUS_/) + " → " + S(a.to_status, /^INCIDENT_STATUS_/) : "";
  return E("li", { "data-version": a.version },
    "v" + a.version + " · " + V2X.time(a.at) + " · " + (a.actor || "") + " · " + S(a.action, /^AUDIT_ACTION_/) +
    (change ? " " + change : "") + (a.details ? " · " + a.details : "") + (a.note ? " · “" + a.note + "”" : ""));
}

async function openIncident(id) {
  state.open = id;
  scheduleRender();
  const box = document.getElementById("detail");
  const r = await V2X.get("/api/v1/incidents/" + encodeURIComponent(id));
  if (!r.ok) { V2X.clear(box).append(E("div", { className: "message error" }, r.data.error)); return; }
  const i = r.data.incident;
  state.openVersion = Number(i.version);
  const message = E("div", { className: "message", id: "message" });
  const note = E("input", { id: "note", placeholder: "note (kept in the audit trail)" });
  const act = async (action) => {
    const res = await V2X.post("/api/v1/incidents/" + encodeURIComponent(id) + "/transition",
      { action, expected_version: state.openVersion, note: note.value });
    showResult(message, res, id);
  };
  const others = [...state.incidents.values()].filter((o) => o.id !== id);
  const mergeSelect = E("select", { id: "merge-select", multiple: true, size: Math.min(4, Math.max(others.length, 1)) },
    others.map((o) => E("option", { value: o.id }, S(o.type, /^EVENT_TYPE_/) + " " + o.id.slice(0, 8))));
  const merge = async () => {
    const ids = [...mergeSelect.selectedOptions].map((o) => o.value);
    const res = await V2X.post("/api/v1/incidents/" + encodeURIComponent(id) + "/merge",
      { incident_ids: ids, expected_version: state.openVersion, note: note.value });
    showResult(message, res, id);
  };
  V2X.fill(box,
    E("h2", { id: "detail-title" }, S(i.type, /^EVENT_TYPE_/) + " · " + S(i.status, /^INCIDENT_STATUS_/)),
    E("p", {}, E("span", { className: "badge", id: "detail-version" }, "version " + i.version), " ",
      E("span", { className: "sev-" + S(i.severity, /^SEVERITY_/).toUpperCase() }, S(i.severity, /^SEVERITY_/)),
      " · confidence " + Math.round((i.confidence || 0) * 100) + "% · radius " + Math.round(i.radius_m || 0) + " m",
      i.description ? " · " + i.description : ""),
    E("div", { id: "stale", className: "message info" }),
    E("p", {}, "Lanes: ", (i.lane_impacts || []).length
      ? (i.lane_impacts || []).map((l) => l.lane_id + " " + S(l.state, /^LANE_STATE_/)).join(", ") : "no lane impact"),
    E("div", { className: "actions" }, note),
    E("div", { className: "actions" }, ACTIONS.map(([a, label]) => E("button", { "data-action": a, onclick: () => act(a) }, label))),
    others.length ? E("div", { className: "actions" }, mergeSelect,
      E("button", { className: "secondary", id: "merge", onclick: merge }, "Merge selected into this")) : null,
    message,
    E("h2", {}, "Sources"),
    E("table", { id: "sources" }, E("tbody", {}, (i.sources || []).map((s) => E("tr", {},
      E("td", {}, S(s.source_kind, /^SOURCE_KIND_/), E("br"), E("span", { className: "muted" }, s.source_id)),
      E("td", {}, Math.round((s.confidence || 0) * 100) + "%", s.lane_id ? " · lane " + s.lane_id : ""),
      E("td", {}, V2X.time(s.observed_at), s.evidence && s.evidence.plate ? E("div", {}, "plate " + s.evidence.plate) : null,
        s.evidence && s.evidence.has_snapshot
          ? E("img", { className: "snapshot", alt: "camera snapshot", src: "/api/v1/evidence/" + encodeURIComponent(s.report_id) })
          : null))))),
    E("h2", {}, "Audit trail"),
    E("ol", { className: "audit", id: "audit" }, (r.data.audit || []).map(auditLine)));
}

function showResult(box, res, id) {
  box.className = "message " + (res.ok ? "info" : "error");
  box.textContent = res.ok ? "done" : res.data.error;
  if (res.ok) {
    upsert(res.data.incident);
    openIncident(id).then(() => {
      const m = document.getElementById("message");
      m.className = "message info";
      m.textContent = "done: now " + S(res.data.incident.status, /^INCIDENT_STATUS_/) + ", version " + res.data.incident.version;
    });
  }
}

async function cameras() {
  const r = await V2X.get("/api/v1/cameras");
  const box = document.getElementById("cameras");
  if (!r.ok) { V2X.clear(box).append(E("p", { className: "muted" }, r.data.error)); return; }
  V2X.clear(box);
  if (!state.cameraLayer) state.cameraLayer = L.layerGroup().addTo(state.map);
  state.cameraLayer.clearLayers();
  for (const c of r.data.cameras) {
    const lanes = c.lanes.map((l) => l.lane_id + ": " + l.vehicles_per_min + "/min, queue " + l.queue_m + " m" +
      (l.congestion && l.congestion !== "UNSPECIFIED" ? " (" + S(l.congestion, /^$/) + ")" : ""));
    L.polygon(c.fov, { color: "#6a3fb0", weight: 1, fillOpacity: 0.15 }).addTo(state.cameraLayer);
    L.circleMarker([c.lat, c.lon], { radius: 5, color: "#6a3fb0", fillOpacity: 1 })
      .bindTooltip(c.name || c.id).addTo(state.cameraLayer);
    box.append(E("div", { className: "card", "data-camera": c.id }, E("h3", {}, c.name || c.id),
      lanes.length ? E("ul", {}, lanes.map((t) => E("li", {}, t))) : E("p", { className: "muted" }, "no counts in the last minutes")));
  }
  if (!r.data.cameras.length) box.append(E("p", { className: "muted" }, "no cameras"));
}

async function municipal() {
  const r = await V2X.get("/api/v1/municipal/status");
  const box = V2X.clear(document.getElementById("municipal"));
  if (!r.ok) { box.append(E("p", { className: "muted" }, r.data.error)); return; }
  if (!r.data.destinations.length) box.append(E("p", { className: "muted" }, "no destinations"));
  for (const d of r.data.destinations) {
    box.append(E("p", { "data-destination": d.destination }, E("strong", {}, d.destination), ": lag " + d.lag_s + " s (" +
      d.lag_records + " records)" + (d.paused ? " · paused" : "") + (d.dead_letters ? " · " + d.dead_letters + " dead letters" : "") +
      (d.last_error ? " · last error: " + d.last_error : "")));
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  const s = await V2X.whoami();
  V2X.header("v2x police console", s);
  const app = document.getElementById("app");
  if (!s.signed_in || s.role !== "police") {
    app.className = "single";
    V2X.signIn(app, "police", s.signed_in ? "Signed in as " + s.role + ": this page is for the police." : null);
    return;
  }
  layout(app);
  state.map = await V2X.map("map");
  stream();
  cameras(); municipal();
  setInterval(cameras, 5000);  // the latest minute of counts, as soon as the roadside service has it
  setInterval(municipal, 15000);
});
