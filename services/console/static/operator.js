// The operator page: the operator's own lots with availability and trend (live), their passages with plates, and
// amending a passage (correct or void, with a reason).
"use strict";

const E = V2X.el;
const S = (v, p) => V2X.strip(v, p);
const TREND = { INCREASING: "↑ filling", DECREASING: "↓ emptying", STABLE: "→ stable", UNKNOWN: "–" };
const state = { lots: new Map(), markers: new Map(), map: null, open: null };

function freeOf(a) { return a && a.total_free !== undefined ? a.total_free : null; }

function lotRow(id) {
  const v = state.lots.get(id);
  const a = v.availability || {};
  const free = freeOf(a);
  const trend = S(a.trend, /^OCCUPANCY_TREND_/).toUpperCase();
  const classes = (a.classes || []).map((c) => S(c.space_class, /^SPACE_CLASS_/) + " " + (c.free ?? "?") + "/" + c.capacity).join(", ");
  return E("tr", { "data-id": id, className: state.open === id ? "selected" : null, onclick: () => openLot(id) },
    E("td", {}, v.lot.name, E("br"), E("span", { className: "muted" }, id)),
    E("td", { className: "free", "data-free": free ?? "" }, free ?? "?"),
    E("td", {}, classes),
    E("td", {}, S(a.status, /^SITE_STATUS_/)),
    E("td", { className: "trend" }, TREND[trend] || trend.toLowerCase()));
}

function render() {
  const body = V2X.clear(document.querySelector("#lots tbody"));
  for (const id of [...state.lots.keys()].sort()) body.append(lotRow(id));
}

function marker(id) {
  const v = state.lots.get(id);
  const a = v.availability || {};
  const cap = (a.classes || []).reduce((n, c) => n + (c.capacity || 0), 0) || 1;
  const free = freeOf(a);
  const colour = free === null ? "#888" : free / cap > 0.2 ? "#1f8a4c" : free > 0 ? "#e0a100" : "#b00020";
  let m = state.markers.get(id);
  if (!m) {
    m = L.circleMarker([v.lot.location.lat, v.lot.location.lon], { radius: 7, color: "#fff", weight: 2, fillOpacity: 0.95 })
      .on("click", () => openLot(id)).addTo(state.map);
    state.markers.set(id, m);
  }
  m.setStyle({ fillColor: colour }).bindTooltip(v.lot.name + ": " + (free ?? "?") + " free");
}

function update(lotAvailability) {
  const v = state.lots.get(lotAvailability.lot_id);
  if (!v) return;
  v.availability = lotAvailability.availability;
  marker(lotAvailability.lot_id);
  const old = document.querySelector('#lots tr[data-id="' + CSS.escape(lotAvailability.lot_id) + '"]');
  if (old) old.replaceWith(lotRow(lotAvailability.lot_id));
}

async function openLot(id) {
  state.open = id;
  render();
  const box = document.getElementById("passages");
  const r = await V2X.get("/api/v1/operator/lots/" + encodeURIComponent(id) + "/passages");
  V2X.clear(box).append(E("h2", {}, "Passages · " + state.lots.get(id).lot.name));
  if (!r.ok) { box.append(E("div", { className: "message error" }, r.data.error)); return; }
  const message = E("div", { className: "message", id: "amend-message" });
  box.append(message, E("table", { id: "passage-table" }, E("thead", {}, E("tr", {}, E("th", {}, "plate"), E("th", {}, "dir."),
    E("th", {}, "time"), E("th", {}, "lane"), E("th", {}, "state"), E("th", {}, "amend"))),
  E("tbody", {}, r.data.passages.map((p) => passageRow(id, p, message)))));
  if (!r.data.passages.length) box.append(E("p", { className: "muted" }, "no passages recorded"));
}

function passageRow(lotId, p, message) {
  const plate = E("input", { className: "amend-plate", size: 9, placeholder: "plate" });
  const reason = E("input", { className: "amend-reason", size: 12, placeholder: "reason" });
  const action = E("select", { className: "amend-action" }, E("option", { value: "correct" }, "correct"), E("option", { value: "void" }, "void"));
  const send = async () => {
    const body = { action: action.value, reason: reason.value };
    if (action.value === "correct" && plate.value) body.plate = plate.value;
    const res = await V2X.post("/api/v1/operator/lots/" + encodeURIComponent(lotId) + "/passages/" +
      encodeURIComponent(p.passage_id) + "/amend", body);
    message.className = "message " + (res.ok ? "info" : "error");
    message.textContent = res.ok ? "amended: " + (res.data.passage.plate || "") + " · " + S(res.data.passage.state, /^PASSAGE_STATE_/) : res.data.error;
    if (res.ok) openLot(lotId).then(() => { const m = document.getElementById("amend-message"); m.className = "message info"; m.textContent = message.textContent; });
  };
  return E("tr", { "data-passage": p.passage_id },
    E("td", { className: "plate" }, p.plate || ""), E("td", {}, S(p.direction, /^PASSAGE_DIRECTION_/)),
    E("td", {}, V2X.time(p.passed_at)), E("td", {}, p.lane || ""),
    E("td", { className: "state" }, S(p.state, /^PASSAGE_STATE_/) + (p.revision ? " r" + p.revision : "")),
    E("td", {}, action, plate, reason, E("button", { className: "amend-send", onclick: send }, "amend")));
}

function stream() {
  const label = document.getElementById("stream-state");
  const es = new EventSource("/api/v1/operator/lots/stream");
  es.onopen = () => { label.textContent = "connected"; };
  es.addEventListener("snapshot_end", () => { label.textContent = "live"; });
  es.onerror = async () => {
    label.textContent = "reconnecting…";
    // Refused for good (the session ended, e.g. its key was revoked): back to the sign-in form.
    if (es.readyState === EventSource.CLOSED && !(await V2X.whoami()).signed_in) location.reload();
  };
  es.addEventListener("lot", (e) => update(JSON.parse(e.data)));
}

document.addEventListener("DOMContentLoaded", async () => {
  const s = await V2X.whoami();
  V2X.header("v2x operator console", s);
  const app = document.getElementById("app");
  if (!s.signed_in || s.role !== "operator") {
    app.className = "single";
    V2X.signIn(app, "operator", s.signed_in ? "Signed in as " + s.role + ": this page is for parking operators." : null);
    return;
  }
  app.append(E("div", {}, E("section", {}, E("div", { id: "map" })),
    E("section", { id: "passages" }, E("p", { className: "muted" }, "Select a lot for its passages."))),
  E("div", {}, E("section", { className: "scroll" }, E("h2", {}, "Lots of " + s.scope + " ",
    E("span", { className: "muted", id: "stream-state" }, "connecting…")),
  E("table", { id: "lots" }, E("thead", {}, E("tr", {}, E("th", {}, "lot"), E("th", {}, "free"), E("th", {}, "by class"),
    E("th", {}, "status"), E("th", {}, "trend"))), E("tbody", {})))));
  state.map = await V2X.map("map");
  const r = await V2X.get("/api/v1/operator/lots");
  if (!r.ok) { app.prepend(E("div", { className: "message error" }, r.data.error)); return; }
  for (const v of r.data.lots) { state.lots.set(v.lot.id, v); marker(v.lot.id); }
  render();
  if (r.data.lots.length) state.map.fitBounds(L.featureGroup([...state.markers.values()]).getBounds().pad(0.1));
  stream();
});
