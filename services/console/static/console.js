// Shared by the console's pages: the API (the session cookie goes by itself; the CSRF token in a header on every
// change), DOM building without innerHTML, the sign-in form, and the offline map (vector layers only).
"use strict";

const V2X = {
  csrf: null,
  session: null,

  async whoami() {
    const r = await fetch("/api/v1/session", { credentials: "same-origin" });
    V2X.session = await r.json();
    V2X.csrf = V2X.session.signed_in ? V2X.session.csrf : null;
    return V2X.session;
  },

  async call(method, path, body) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET" && V2X.csrf) init.headers["X-CSRF-Token"] = V2X.csrf;
    const r = await fetch(path, init);
    let data = null;
    try { data = await r.json(); } catch (e) { data = { error: r.statusText }; }
    return { ok: r.ok, status: r.status, data };
  },
  get(path) { return V2X.call("GET", path); },
  post(path, body) { return V2X.call("POST", path, body); },

  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "className") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  },
  clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; },
  // Replaces `e`'s children with `children`, leaving out null and undefined (a child shown only sometimes).
  fill(e, ...children) { V2X.clear(e).append(...children.flat().filter((c) => c !== null && c !== undefined)); return e; },
  strip(value, prefix) { return String(value || "").replace(prefix, "").replaceAll("_", " ").toLowerCase(); },
  time(iso) { return iso ? new Date(iso).toLocaleTimeString() : ""; },
  yuan(fen) { return "¥" + (fen / 100).toFixed(2); },

  // The sign-in form in `container`; after sign-in the page reloads (or goes to the role's page).
  signIn(container, wanted, note) {
    V2X.clear(container);
    const key = V2X.el("input", { type: "password", id: "key", autocomplete: "off", placeholder: "v2x_…" });
    const msg = V2X.el("div", { className: "message error", id: "signin-message" });
    const form = V2X.el("form", { id: "signin", className: "signin" },
      V2X.el("h2", {}, "Sign in" + (wanted ? " (" + wanted + ")" : "")),
      note ? V2X.el("p", { className: "muted" }, note) : null,
      V2X.el("label", { for: "key" }, "API key"), key, msg,
      V2X.el("button", { type: "submit", id: "signin-button" }, "Sign in"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const r = await V2X.post("/api/v1/session", { key: key.value });
      key.value = "";
      if (!r.ok) { msg.textContent = r.data.error; return; }
      if (wanted && r.data.role !== wanted) location.assign(r.data.home);
      else location.reload();
    });
    container.append(V2X.el("section", {}, form));
  },

  async signOut() {
    await V2X.call("DELETE", "/api/v1/session");
    location.assign("/");
  },

  header(title, session) {
    const h = V2X.el("header", {},
      V2X.el("h1", {}, title),
      V2X.el("nav", {}, V2X.el("a", { href: "/public" }, "Public"), V2X.el("a", { href: "/police" }, "Police"),
        V2X.el("a", { href: "/operator" }, "Operator")),
      session && session.signed_in ? V2X.el("span", { className: "who", id: "who" },
        session.role + (session.scope ? ":" + session.scope : "")) : null,
      session && session.signed_in ? V2X.el("button", { id: "signout", onclick: V2X.signOut }, "Sign out") : null);
    document.body.prepend(h);
  },

  // A Leaflet map without tiles: the district's outline and lanes (from the simulator's SUMO net) are the base.
  async map(id, center) {
    const map = L.map(id, { zoomControl: true, attributionControl: false, preferCanvas: false })
      .setView(center || [31.40, 121.49], 15);
    const r = await V2X.get("/api/v1/map/district");
    if (r.ok) {
      const layer = L.geoJSON(r.data, {
        style: (f) => f.properties.layer === "outline"
          ? { color: "#5b7083", weight: 2, dashArray: "6 4", fill: true, fillColor: "#dfe7ee", fillOpacity: 0.5 }
          : { color: "#8b98a5", weight: 2, opacity: 0.9 },
      }).addTo(map);
      map.v2xDistrict = layer;
      if (!center && r.data.features.length) map.fitBounds(layer.getBounds().pad(0.15));
    }
    return map;
  },
};
