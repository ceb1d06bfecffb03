// The console's front door: sign in with an API key (the page then goes to the role's page), or the public page.
"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  const s = await V2X.whoami();
  V2X.header("v2x console", s);
  const app = document.getElementById("app");
  if (s.signed_in) { location.assign(s.home); return; }
  V2X.signIn(app, null, "Police and parking operators sign in with their API key. Drivers and everyone else: " +
    "the public page needs no sign-in.");
  app.append(V2X.el("section", {}, V2X.el("a", { href: "/public", id: "to-public" }, "Parking and charging near me →")));
});
