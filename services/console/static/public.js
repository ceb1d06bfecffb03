// The public page, no sign-in: parking and charging near a place (the phone's position when it gives one, else the
// district's centre, or ?lat=&lon= in the address). Free spaces by class, chargers by connector type and power,
// prices and opening hours, on the map and as a list; live.
"use strict";

const E = V2X.el;
const S = (v, p) => V2X.strip(v, p);
const state = { map: null, lots: new Map(), chargers: new Map(), layer: null, es: null, here: null };

function lotCard(l) {
  const classes = l.classes.map((c) => S(c.class, /^$/) + " " + (c.free ?? "?") + "/" + c.capacity).join(" · ");
  const price = l.price.free_minutes ? l.price.free_minutes + " min free, then " : "";
  return E("div", { className: "card lot", "data-id": l.id },
    E("h3", {}, l.name, " ", E("span", { className: "badge" }, S(l.kind, /^$/))),
    E("div", {}, E("span", { className: "free", "data-free": l.total_free ?? "" }, (l.total_free ?? "?") + " free"),
      " · " + classes + " · " + l.distance_m + " m"),
    E("div", { className: "muted price" }, !l.price.first_hour_fen && !l.price.per_hour_fen ? "free of charge"
      : price + V2X.yuan(l.price.first_hour_fen || 0) + " first hour, " + V2X.yuan(l.price.per_hour_fen || 0) + "/h after" +
        (l.price.daily_cap_fen ? ", max " + V2X.yuan(l.price.daily_cap_fen) + "/day" : "")),
    E("div", { className: "muted" }, (l.opening_hours || []).join("; ")));
}

function chargerCard(c) {
  const byType = new Map();
  for (const k of c.connectors) {
    const key = k.standard + " " + k.max_power_kw + " kW";
    const t = byType.get(key) || { n: 0, free: 0, price: k.price_per_kwh_fen + k.service_fee_per_kwh_fen };
    t.n += 1; if (k.status === "AVAILABLE") t.free += 1;
    byType.set(key, t);
  }
  return E("div", { className: "card charger", "data-id": c.id },
    E("h3", {}, c.name),
    E("div", {}, E("span", { className: "free", "data-available": c.available }, c.available + " available"), " · " + c.distance_m + " m"),
    E("ul", {}, [...byType.entries()].map(([k, t]) => E("li", {}, k.replaceAll("_", " ") + ": " + t.free + "/" + t.n +
      " free · " + V2X.yuan(t.price) + "/kWh incl. service"))),
    E("div", { className: "muted" }, c.address + " · " + (c.opening_hours || []).join("; ")));
}

function render() {
  const lots = V2X.clear(document.getElementById("lots"));
  for (const l of [...state.lots.values()].sort((a, b) => a.distance_m - b.distance_m)) lots.append(lotCard(l));
  if (!state.lots.size) lots.append(E("p", { className: "muted" }, "no parking nearby"));
  const ch = V2X.clear(document.getElementById("chargers"));
  for (const c of [...state.chargers.values()].sort((a, b) => a.distance_m - b.distance_m)) ch.append(chargerCard(c));
  if (!state.chargers.size) ch.append(E("p", { className: "muted" }, "no chargers nearby"));
  state.layer.clearLayers();
  for (const l of state.lots.values()) {
    const colour = l.total_free === null ? "#888" : l.total_free > 0 ? "#1f8a4c" : "#b00020";
    L.circleMarker([l.lat, l.lon], { radius: 7, color: "#fff", weight: 2, fillColor: colour, fillOpacity: 0.95 })
      .bindTooltip(l.name + ": " + (l.total_free ?? "?") + " free").addTo(state.layer);
  }
  for (const c of state.chargers.values()) {
    L.circleMarker([c.lat, c.lon], { radius: 6, color: "#0b5cad", weight: 2, fillColor: "#9cc8f5", fillOpacity: 0.95 })
      .bindTooltip(c.name + ": " + c.available + " available").addTo(state.layer);
  }
  L.circleMarker(state.here, { radius: 4, color: "#000", fillOpacity: 1 }).bindTooltip("you").addTo(state.layer);
}

async function load(lat, lon) {
  state.here = [lat, lon];
  const q = "lat=" + lat + "&lon=" + lon + "&radius_m=1500";
  const r = await V2X.get("/api/v1/public/nearby?" + q);
  const msg = document.getElementById("public-message");
  if (!r.ok) { msg.className = "message error"; msg.textContent = r.data.error; return; }
  state.lots = new Map(r.data.lots.map((l) => [l.id, l]));
  state.chargers = new Map(r.data.chargers.map((c) => [c.id, c]));
  state.map.setView(state.here, 15);
  render();
  if (state.es) state.es.close();
  state.es = new EventSource("/api/v1/public/stream?" + q + "&stations=" + [...state.chargers.keys()].map(encodeURIComponent).join(","));
  document.body.dataset.live = "";
  state.es.addEventListener("snapshot_end", () => { document.body.dataset.live = "1"; });
  state.es.addEventListener("lot", (e) => {
    const l = JSON.parse(e.data);
    const old = state.lots.get(l.id);
    if (!old) return;
    state.lots.set(l.id, { ...old, ...l, opening_hours: old.opening_hours, distance_m: old.distance_m });
    render();
  });
  state.es.addEventListener("connector", (e) => {
    const u = JSON.parse(e.data);
    const c = state.chargers.get(u.station_id);
    if (!c) return;
    const i = c.connectors.findIndex((k) => k.id === u.connector.id);
    if (i >= 0) c.connectors[i] = u.connector; else return;
    c.available = c.connectors.filter((k) => k.status === "AVAILABLE").length;
    render();
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  const s = await V2X.whoami();
  V2X.header("Parking and charging near me", s);
  const app = document.getElementById("app");
  // On a desktop: the map with the chargers under it, parking beside; on a phone: map, parking, charging.
  const charging = E("section", { id: "charging" }, E("h2", {}, "Charging"), E("div", { id: "chargers" }));
  app.append(E("div", { className: "stack" }, E("section", {}, E("div", { id: "map" }),
    E("p", { className: "muted legend" }, E("span", { className: "dot lot-dot" }), " parking (red: full) ",
      E("span", { className: "dot charger-dot" }), " charging ", E("span", { className: "dot you-dot" }), " you")),
  charging),
  E("div", {}, E("div", { className: "message", id: "public-message" }),
    E("section", { className: "scroll" }, E("h2", {}, "Parking"),
      E("button", { className: "secondary", id: "locate" }, "Use my position"), E("div", { id: "lots" }))));
  state.map = await V2X.map("map", [31.40, 121.49]);
  state.layer = L.layerGroup().addTo(state.map);
  const params = new URLSearchParams(location.search);
  const lat = Number(params.get("lat") || 31.40), lon = Number(params.get("lon") || 121.49);
  document.getElementById("locate").addEventListener("click", () => navigator.geolocation.getCurrentPosition(
    (p) => load(p.coords.latitude, p.coords.longitude),
    () => { const m = document.getElementById("public-message"); m.className = "message info"; m.textContent = "no position: showing the district"; }));
  await load(lat, lon);
});
