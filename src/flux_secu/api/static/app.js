// flux-secu web interface: no framework, no build step. Text always goes in through textContent.
"use strict";

const KIND = { intrusion: "Intrusion", panic: "Alerte agent", camera_fault: "Panne caméra", activity: "Activité" };
const STATE = { open: "Ouvert", warned: "Averti", deterred: "Dissuadé", escalated: "Escaladé",
                acknowledged: "Pris en charge", closed: "Clos" };
const HEALTH = { ok: "En ligne", stalled: "Figée", fault: "En panne", unknown: "Inconnue", starting: "Démarrage" };
const EVENT = { opened: "Incident ouvert", confirmed: "Présence confirmée", warning: "Avertissement sonore",
                warning_failed: "Haut-parleur en panne", warning_skipped: "Avertissement non répété",
                recheck: "Vérification", deterred: "Personne partie", escalated: "Escalade",
                notification: "Notification envoyée", notification_failed: "Notification en échec",
                acknowledged: "Pris en charge", presence_ended: "Fin de présence", panic_proof: "Preuve de l'alerte",
                evidence: "Preuve enregistrée", legal_hold: "Conservation légale" };
const SNAPSHOT_REFRESH_MS = 2000, FEED_REFRESH_MS = 3000;

let me = null, timers = [], seenIncidents = null;

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}
// Times in the deployment's timezone (the sites'), whatever the phone's setting.
const when = (ts) => new Date(ts * 1000).toLocaleString("fr-FR", { dateStyle: "short", timeStyle: "medium",
                                                                  timeZone: (me && me.timezone) || undefined });
const can = (role) => me && ["viewer", "operator", "admin"].indexOf(me.role) >= ["viewer", "operator", "admin"].indexOf(role);

async function api(path, options = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...options,
    // Every state-changing request is JSON (the API refuses others: CSRF), with or without a body.
    headers: { "Accept": "application/json",
               ...(options.body || (options.method && options.method !== "GET") ? { "Content-Type": "application/json" } : {}) } });
  if (res.status === 401) { showLogin(); throw new Error("non connecté"); }
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error((data && data.detail) || `erreur ${res.status}`);
  return data;
}

function stopTimers() { timers.forEach(clearInterval); timers = []; }
function every(ms, fn) { fn(); timers.push(setInterval(fn, ms)); }

function showLogin() {
  stopTimers(); me = null;
  $("#view").hidden = true; $("#nav").hidden = true; $("#who").textContent = "";
  $("#login").hidden = false;
  $("#login-form [name=name]").focus();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  $("#login-error").textContent = "";
  try {
    const res = await fetch("/api/login", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: form.name.value, password: form.password.value }) });
    const data = await res.json();
    if (!res.ok) {
      $("#login-error").textContent = res.status === 429 ? "Trop d'essais : réessayez plus tard."
        : res.status === 401 ? "Identifiant ou mot de passe incorrect." : (data.detail || "Erreur");
      return;
    }
    form.password.value = "";
    start();
  } catch (e) { $("#login-error").textContent = "Serveur injoignable."; }
});

async function start() {
  try { me = await api("/api/me"); } catch (e) { return; }
  $("#login").hidden = true; $("#nav").hidden = false; $("#view").hidden = false;
  $("#who").replaceChildren(`${me.user} (${me.role})`,
    el("button", { onclick: async () => { await fetch("/api/logout", { method: "POST", headers: { "Content-Type": "application/json" } }); showLogin(); } }, "Déconnexion"));
  route();
}

let routed = null;  // the location last shown: a fragment navigation fires popstate *and* hashchange
function route() {
  if (!me) return;
  routed = location.pathname + location.hash;
  stopTimers();
  const detail = location.pathname.match(/^\/incidents\/(.+)$/);
  const view = detail ? "incidents" : (location.hash.slice(1) || "cameras");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  every(FEED_REFRESH_MS, updateBadge);
  if (detail) return showIncident(decodeURIComponent(detail[1]));
  ({ cameras: showCameras, incidents: showIncidents, sites: showSites, report: showReport }[view] || showCameras)();
}
// Each event alone would render the view again, and two renders of an async view race each other (the
// second replaces what the user already typed in the first).
function navigated() { if (location.pathname + location.hash !== routed) route(); }
window.addEventListener("hashchange", () => {
  if (location.pathname !== "/") history.replaceState(null, "", "/" + location.hash);
  navigated();
});
window.addEventListener("popstate", navigated);
function go(path) { history.pushState(null, "", path); route(); }

async function updateBadge() {
  try {
    const open = (await api("/api/incidents?limit=100")).filter((i) => i.kind !== "activity"
      && !["acknowledged", "closed", "deterred"].includes(i.state));
    $("#badge").hidden = open.length === 0; $("#badge").textContent = open.length;
  } catch (e) { /* shown elsewhere */ }
}

// --- camera wall ------------------------------------------------------------------------------
async function showCameras() {
  const view = $("#view");
  const cams = await api("/api/cameras");
  const wall = el("div", { class: "grid", "data-testid": "camera-wall" });
  view.replaceChildren(el("h1", {}, "Mur de caméras"), wall);
  const cards = cams.map((c) => {
    const img = el("img", { alt: `Caméra ${c.id}`, "data-camera": c.id });
    const none = el("div", { class: "noimg", hidden: true }, "Pas d'image");
    img.addEventListener("error", () => { img.hidden = true; none.hidden = false; });
    img.addEventListener("load", () => { img.hidden = false; none.hidden = true; });
    const tag = el("span", { class: `tag ${c.health}`, "data-testid": "health" }, HEALTH[c.health] || c.health);
    wall.append(el("div", { class: "card", "data-testid": "camera" }, img, none,
      el("div", { class: "body row" }, el("span", {}, el("strong", {}, c.id), " ", el("span", { class: "muted" }, c.site_name)), tag)));
    return { c, img, tag };
  });
  every(SNAPSHOT_REFRESH_MS, async () => {
    for (const { c, img } of cards) img.src = `${c.snapshot}?t=${Date.now()}`;
    try {
      const fresh = Object.fromEntries((await api("/api/cameras")).map((c) => [c.id, c.health]));
      for (const { c, tag } of cards) {
        const h = fresh[c.id] || "unknown";
        tag.className = `tag ${h}`; tag.textContent = HEALTH[h] || h;
      }
    } catch (e) { /* next round */ }
  });
}

// --- incident feed ----------------------------------------------------------------------------
function incidentCard(i, fresh) {
  const thumb = i.evidence["snapshot.jpg"] ? el("img", { class: "thumb", src: i.evidence["snapshot.jpg"], alt: "" })
    : el("div", { class: "noimg thumb" }, KIND[i.kind] || i.kind);
  return el("div", { class: `card incident${fresh ? " fresh" : ""}`, "data-testid": "incident", "data-id": i.id,
                     onclick: () => go(`/incidents/${encodeURIComponent(i.id)}`) },
    thumb,
    el("div", { class: "body" },
      el("div", { class: "row" }, el("strong", {}, KIND[i.kind] || i.kind),
        el("span", { class: `tag ${i.state}`, "data-testid": "state" }, STATE[i.state] || i.state)),
      el("div", {}, `${i.site} · ${i.camera || "—"} · ${i.label}`),
      el("div", { class: "muted" }, when(i.opened_at)),
      i.acknowledged_by ? el("div", { class: "muted" }, `Pris en charge par ${i.acknowledged_by}`) : null));
}

async function showIncidents() {
  const view = $("#view");
  const feed = el("div", { class: "feed", "data-testid": "feed" });
  const site = el("select", { "aria-label": "Site" }, el("option", { value: "" }, "Tous les sites"));
  const kind = el("select", { "aria-label": "Type" }, el("option", { value: "" }, "Tous les types"),
    Object.entries(KIND).map(([k, v]) => el("option", { value: k }, v)));
  (await api("/api/sites")).forEach((s) => site.append(el("option", { value: s.id }, s.name)));
  view.replaceChildren(el("h1", {}, "Incidents"), el("div", { class: "actions" }, site, kind), feed);
  const refresh = async () => {
    const q = new URLSearchParams({ limit: "50" });
    if (site.value) q.set("site", site.value);
    if (kind.value) q.set("kind", kind.value);
    const list = await api(`/api/incidents?${q}`);
    const first = seenIncidents === null;
    seenIncidents = seenIncidents || new Set();
    feed.replaceChildren(...(list.length ? list.map((i) => incidentCard(i, !first && !seenIncidents.has(i.id)))
      : [el("p", { class: "muted" }, "Aucun incident.")]));
    list.forEach((i) => seenIncidents.add(i.id));
  };
  site.addEventListener("change", refresh); kind.addEventListener("change", refresh);
  every(FEED_REFRESH_MS, () => refresh().catch(() => {}));
}

async function showIncident(id) {
  const view = $("#view");
  let i;
  try { i = await api(`/api/incidents/${encodeURIComponent(id)}`); }
  catch (e) { view.replaceChildren(el("p", { class: "error" }, e.message)); return; }
  const media = [];
  if (i.evidence["snapshot.jpg"]) media.push(el("img", { src: i.evidence["snapshot.jpg"], alt: "Image de l'incident", "data-testid": "snapshot" }));
  if (i.evidence["clip.mp4"]) media.push(el("video", { src: i.evidence["clip.mp4"], controls: true, playsinline: true, preload: "metadata", "data-testid": "clip" }));
  if (!media.length) media.push(el("div", { class: "noimg" }, "Pas de preuve image"));
  const message = el("p", { class: "muted", role: "status", "data-testid": "ack-message" });
  const done = ["acknowledged", "closed"].includes(i.state);
  const ack = can("operator") ? el("button", { class: "ack", "data-testid": "acknowledge", disabled: done,
    onclick: async () => {
      ack.disabled = true;
      try { const r = await api(`/api/incidents/${encodeURIComponent(id)}/acknowledge`, { method: "POST" });
            message.textContent = r.first ? "Pris en charge : la chaîne d'astreinte est arrêtée." : "Déjà pris en charge.";
            showIncident(id); }
      catch (e) { message.textContent = e.message; ack.disabled = false; }
    } }, done ? `Pris en charge${i.acknowledged_by ? " par " + i.acknowledged_by : ""}` : "Je prends en charge") : null;
  const actions = el("div", { class: "actions" },
    el("a", { class: "button", href: "#incidents" }, "← Incidents"),
    can("operator") ? el("a", { class: "button", href: `/api/incidents/${encodeURIComponent(id)}/export` }, "Exporter (zip signé)") : null);
  view.replaceChildren(
    el("div", { class: "detail", "data-testid": "incident-detail" },
      el("div", { class: "row" }, el("h1", {}, `${KIND[i.kind] || i.kind} · ${i.site}`),
        el("span", { class: `tag ${i.state}`, "data-testid": "state" }, STATE[i.state] || i.state)),
      el("p", { class: "muted" }, `${when(i.opened_at)} · caméra ${i.camera || "—"} · ${i.label} · score ${i.score.toFixed(2)}`),
      ...media, ack, message, actions,
      el("h2", {}, "Chronologie"),
      el("ul", { class: "timeline", "data-testid": "timeline" }, i.timeline.map((e) =>
        el("li", {}, el("strong", {}, EVENT[e.kind] || e.kind), " ", el("span", { class: "muted" }, when(e.ts)),
          e.data && (e.data.contact || e.data.by || e.data.speaker) ? ` — ${e.data.contact || e.data.by || e.data.speaker}` : "")))));
  if (!done) every(FEED_REFRESH_MS * 2, async () => {
    const fresh = await api(`/api/incidents?limit=500`).catch(() => []);
    const now = fresh.find((x) => x.id === id);
    if (now && now.state !== i.state) showIncident(id);
  });
}

// --- sites: arm / disarm ----------------------------------------------------------------------
async function showSites() {
  const view = $("#view");
  const sites = await api("/api/sites");
  const render = () => view.replaceChildren(el("h1", {}, "Sites"), el("div", { class: "grid" }, sites.map(siteCard)));
  const siteCard = (s) => {
    const hours = el("select", { "aria-label": "Durée" }, [1, 2, 4, 8, 12, 24].map((h) => el("option", { value: h * 3600 }, `${h} h`)));
    const message = el("p", { class: "error" });
    const act = (armed) => async () => {
      try {
        const updated = armed === null
          ? await api(`/api/sites/${s.id}/override`, { method: "DELETE" })
          : await api(`/api/sites/${s.id}/override`, { method: "POST", body: JSON.stringify({ armed, for_s: Number(hours.value) }) });
        sites[sites.indexOf(s)] = updated; render();
      } catch (e) { message.textContent = e.message; }
    };
    const o = s.override;
    return el("div", { class: "card", "data-testid": "site", "data-id": s.id }, el("div", { class: "body" },
      el("div", { class: "row" }, el("strong", {}, s.name),
        el("span", { class: `tag ${s.armed ? "armed" : "disarmed"}`, "data-testid": "armed" }, s.armed ? "Armé" : "Désarmé")),
      el("p", { class: "muted" }, s.open_by_calendar ? "Ouvert selon le calendrier" : "Fermé selon le calendrier",
        o ? ` · ${o.armed ? "armé" : "désarmé"} à la main par ${o.by} jusqu'à ${when(o.until)}` : ""),
      can("operator") ? el("div", { class: "actions" }, hours,
        el("button", { onclick: act(true) }, "Armer"), el("button", { onclick: act(false) }, "Désarmer"),
        o ? el("button", { onclick: act(null) }, "Revenir au calendrier") : null) : null,
      message));
  };
  render();
}

// --- night report -----------------------------------------------------------------------------
async function showReport() {
  const view = $("#view");
  const sites = await api("/api/sites");
  const site = el("select", { "aria-label": "Site" }, sites.map((s) => el("option", { value: s.id }, s.name)));
  const yesterday = new Date(Date.now() - 86400000).toISOString().slice(0, 10);
  const night = el("input", { type: "date", value: yesterday, "aria-label": "Nuit du" });
  const out = el("div", { class: "panel", "data-testid": "report" });
  let asked = 0;  // only the latest request's answer is shown: answers may arrive out of order
  const load = async () => {
    const mine = ++asked;
    try {
      const r = await api(`/api/sites/${site.value}/report?night=${night.value}`);
      if (mine === asked) out.replaceChildren(el("h2", {}, r.title), el("pre", {}, r.body));
    } catch (e) { if (mine === asked) out.replaceChildren(el("p", { class: "error" }, e.message)); }
  };
  site.addEventListener("change", load); night.addEventListener("change", load);
  view.replaceChildren(el("h1", {}, "Rapport de nuit"), el("div", { class: "actions" }, site, night), out);
  load();
}

start();
