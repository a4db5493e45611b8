// The alarm layer on every console page (issue 19): one live stream of the open alarms, a bar and sound while
// any alarm waits for acknowledgement, and a loud banner when the gateway stops answering. Pages that show
// alarms themselves (the board, the plan) listen to it: CampusAlarms.listen(fn).
"use strict";
(() => {
  const CFG = JSON.parse(document.getElementById("layer-config").textContent);
  const W = CFG.words, LABELS = CFG.labels, ZONES = CFG.zones;
  const body = document.body;
  const alarms = new Map();
  const listeners = [];
  const STATES = new Set(["active_unack", "active_ack", "cleared_unack", "cleared_ack", "closed"]);
  let clockOffset = 0;  // the gateway's (site) clock minus this browser's: ages go by the gateway's clock
  let lastMessage = 0, downSince = null, stream = null;
  const PING_S = CFG.ping_s, STALE_S = 3 * CFG.ping_s;

  function valid(a) {
    return a !== null && typeof a === "object" && Number.isSafeInteger(a.id) && STATES.has(a.state)
      && Number.isFinite(a.priority) && typeof a.alarm_type === "string" && typeof a.raised_at === "string"
      && !Number.isNaN(Date.parse(a.raised_at));
  }
  function parsed(text) { try { return JSON.parse(text); } catch (e) { return null; } }
  // Views of one alarm can arrive out of order (an action's answer, then a relayed update read before it): the
  // newer revision wins, so no screen shows an alarm going back to a state it has left.
  function accept(a) {
    if (!valid(a)) return false;
    const had = alarms.get(a.id);
    if (had && Number.isFinite(had.revision) && a.revision < had.revision) return false;
    alarms.set(a.id, a); return true;
  }
  function now() { return Date.now() + clockOffset; }
  function secondsSince(iso) { return Math.max(0, Math.round((now() - Date.parse(iso)) / 1000)); }
  function age(iso) {
    const s = secondsSince(iso);
    if (s < 60) return s + " " + W.s;
    if (s < 3600) return Math.floor(s / 60) + " " + W.min;
    return Math.floor(s / 3600) + " " + W.h + " " + Math.floor(s % 3600 / 60) + " " + W.min;
  }
  const label = a => LABELS[a.alarm_type] || a.alarm_type;
  const zoneName = a => (a.zone && ZONES[a.zone]) || a.zone || "";
  const latest = a => (typeof a.last_event_at === "string" && !Number.isNaN(Date.parse(a.last_event_at))
    ? a.last_event_at : a.raised_at);  // valid() checked raised_at; an odd last_event_at must not break sorting
  // What needs a person now, worst first: unacknowledged before acknowledged, then priority, then the newest.
  function waiting() {
    return [...alarms.values()].filter(a => a.state.endsWith("_unack") && !a.test)
      .sort((a, b) => a.priority - b.priority || latest(b).localeCompare(latest(a)));
  }
  function open() {
    return [...alarms.values()].filter(a => a.state !== "closed")
      .sort((a, b) => (b.state.endsWith("_unack") - a.state.endsWith("_unack")) || a.priority - b.priority
        || latest(b).localeCompare(latest(a)));
  }
  function changed() {
    renderBar();
    sound.update();
    for (const fn of listeners) { try { fn("alarms"); } catch (e) { console.error(e); } }
  }

  // -- the bar ------------------------------------------------------------------------------------------------
  const bar = document.getElementById("alarm-bar");
  function renderBar() {
    const list = waiting();
    const worst = list[0];
    const hide = !worst || CFG.board;  // the board shows the worst alarm as its own card
    bar.hidden = hide;
    body.dataset.alarmBar = hide ? "off" : "on";
    if (!worst) { body.dataset.waiting = "0"; return; }
    body.dataset.waiting = String(list.length);
    if (hide) return;
    bar.className = "p" + Math.min(worst.priority, 3);
    bar.querySelector(".what").textContent = label(worst) + (worst.occurrences > 1 ? ` ×${worst.occurrences}` : "");
    bar.querySelector(".where").textContent = [zoneName(worst), worst.place].filter(Boolean).join(" · ");
    bar.querySelector(".age").textContent = age(latest(worst));
    bar.querySelector(".more").textContent = list.length > 1 ? W.more.replace("{n}", list.length - 1) : "";
    bar.querySelector("a.go").href = "/alarms/" + worst.id;
  }
  document.addEventListener("keydown", e => {
    if (e.altKey && (e.key === "a" || e.key === "A") && !bar.hidden) { e.preventDefault(); bar.querySelector("a.go").click(); }
  });

  // -- sound ----------------------------------------------------------------------------------------------
  // Browsers start audio only after the page has been clicked (or when the browser was started to allow it).
  // The wish is kept per browser; a kiosk (an alarm workstation) cannot turn it off at all, and any click or key
  // on the page turns it back on if the browser held it back.
  const store = window.localStorage;
  const TONES = {  // [start s, frequency Hz, length s] per priority; repeated every `every` s
    p1: {every: 1.2, notes: [[0, 960, 0.25], [0.3, 770, 0.25], [0.6, 960, 0.25], [0.9, 770, 0.25]], type: "square"},
    p2: {every: 2.0, notes: [[0, 880, 0.18], [0.25, 880, 0.18]], type: "square"},
    p3: {every: 4.0, notes: [[0, 660, 0.35]], type: "sine"},
    down: {every: 3.0, notes: [[0, 440, 0.4], [0.5, 330, 0.6]], type: "triangle"},
  };
  const sound = {
    ctx: null, timer: null, tone: "", spoken: new Map(), kiosk: store.getItem("campusgw.kiosk") === "1",
    wanted() { return this.kiosk || store.getItem("campusgw.sound") === "on"; },
    start() {
      try {
        this.ctx = this.ctx || new (window.AudioContext || window.webkitAudioContext)();
        this.ctx.onstatechange = () => this.show();
        this.ctx.resume().then(() => this.show(), () => this.show());
      } catch (e) { /* no audio device: the page says sound is off */ }
      this.show();
    },
    enable() { store.setItem("campusgw.sound", "on"); this.start(); this.update(); },
    disable() {
      if (this.kiosk) return;
      store.setItem("campusgw.sound", "off"); this.update(); this.show();
    },
    setKiosk(on) {
      this.kiosk = on; store.setItem("campusgw.kiosk", on ? "1" : "0");
      if (on) this.enable(); else this.show();
    },
    on() { return this.wanted() && this.ctx !== null && this.ctx.state === "running"; },
    blocked() { return this.wanted() && (this.ctx === null || this.ctx.state !== "running"); },
    play(name) {
      if (!this.on()) return;
      const tone = TONES[name], t = this.ctx.currentTime;
      for (const [start, freq, length] of tone.notes) {
        const o = this.ctx.createOscillator(), g = this.ctx.createGain();
        o.type = tone.type; o.frequency.value = freq; g.gain.value = 0.2;
        o.connect(g); g.connect(this.ctx.destination); o.start(t + start); o.stop(t + start + length);
      }
      body.dataset.tones = String(Number(body.dataset.tones || 0) + 1);
    },
    wantedTone() {
      if (body.dataset.stream === "down" && downSince !== null) return "down";
      const worst = waiting()[0];
      return worst ? "p" + Math.min(worst.priority, 3) : "";
    },
    update() {
      const tone = this.wantedTone();
      if (tone !== this.tone) {
        clearTimeout(this.timer); this.timer = null; this.tone = tone;
        const loop = () => { this.play(tone); this.timer = setTimeout(loop, TONES[tone].every * 1000); };
        if (tone) loop();
      }
      body.dataset.tone = this.on() ? tone : "";
      this.speak();
      this.show();
    },
    // The spoken line ("南门 一键报警"), made on the gateway: once per new alarm and per new press.
    speak() {
      if (!this.on() || !CFG.speech) return;
      for (const a of waiting().slice(0, 3)) {
        const key = a.id + ":" + a.occurrences;
        if (this.spoken.has(key)) continue;
        this.spoken.set(key, true);
        fetch(`/api/alarms/${a.id}/speech`).then(r => r.ok ? r.arrayBuffer() : Promise.reject(r.status))
          .then(data => this.ctx.decodeAudioData(data)).then(buffer => {
            const source = this.ctx.createBufferSource();
            source.buffer = buffer; source.connect(this.ctx.destination); source.start(this.ctx.currentTime + 1.3);
            body.dataset.spoken = String(Number(body.dataset.spoken || 0) + 1);
          }).catch(() => {});
      }
    },
    show() {
      const on = this.on(), needed = this.wantedTone() !== "";
      body.dataset.sound = on ? "on" : "off";
      body.dataset.kiosk = this.kiosk ? "on" : "off";
      document.getElementById("sound-off").classList.toggle("show", !on && !this.blocked() && needed);
      document.getElementById("sound-blocked").hidden = !this.blocked();
      document.getElementById("sound-on").hidden = !on;
      document.getElementById("sound-mute").hidden = !on || this.kiosk;
      document.getElementById("kiosk").checked = this.kiosk;
    },
  };
  document.getElementById("sound-off").onclick = () => sound.enable();
  document.getElementById("sound-mute").onclick = () => sound.disable();
  document.getElementById("kiosk").onchange = e => sound.setKiosk(e.target.checked);
  // A click or key anywhere is the gesture a browser waits for: a wanted sound that was held back starts.
  for (const kind of ["pointerdown", "keydown"]) {
    document.addEventListener(kind, () => { if (sound.blocked()) sound.start(); }, true);
  }
  if (sound.wanted()) sound.start();

  // -- the stream and the gateway's health ----------------------------------------------------------------
  const down = document.getElementById("gateway-down");
  function setLink(up) {
    if (up) { downSince = null; body.dataset.stream = "up"; down.hidden = true; }
    else if (downSince === null) { downSince = Date.now(); body.dataset.stream = "down"; down.hidden = false; }
    renderDown();
    sound.update();
    for (const fn of listeners) { try { fn("link"); } catch (e) { console.error(e); } }
  }
  function renderDown() {
    if (downSince === null) return;
    const last = lastMessage ? Math.round((Date.now() - lastMessage) / 1000) : null;
    down.querySelector(".since").textContent = last === null ? "" : W.last_update.replace("{s}", last);
  }
  function heard(serverNow) {
    lastMessage = Date.now();
    if (serverNow) { const t = Date.parse(serverNow); if (!Number.isNaN(t)) clockOffset = t - Date.now(); }
    if (body.dataset.stream !== "up") setLink(true);
  }
  // One stream per browser, not per tab: a browser keeps at most six connections to one host (HTTP/1.1), and a
  // stream per tab would leave the seventh tab's pages loading for ever. The tabs elect a leader (a lease in
  // localStorage, renewed every second); the leader holds the stream and relays it to the others on a
  // BroadcastChannel; when it closes, another takes over within LEASE_MS.
  const LEASE_KEY = "campusgw.stream-leader", LEASE_MS = 3000, ME = Math.random().toString(36).slice(2);
  const channel = window.BroadcastChannel ? new BroadcastChannel("campusgw-alarms") : null;
  let leading = false, claimedAt = 0;
  function handle(type, data) {
    if (type === "snapshot") {
      const list = parsed(data);
      if (!Array.isArray(list)) return;
      alarms.clear(); for (const a of list) accept(a);
      heard(null); changed();
    } else if (type === "clock") {
      const c = parsed(data); heard(c && c.now);
    } else if (type === "alarm") {
      heard(null); if (accept(parsed(data))) changed();
    } else if (type === "police") {
      heard(null);
      const paths = parsed(data);
      if (Array.isArray(paths)) for (const fn of listeners) fn("police", paths.filter(p => p !== null && typeof p === "object"));
    } else if (type === "lockdown") {
      heard(null); showLockdown(parsed(data));
    } else if (type === "notices") {
      heard(null); showNotices(parsed(data));
    } else if (type === "down") {
      setLink(false);
    }
  }
  // A campus lockdown (or its drill) on every page, as loud as the gateway's own trouble.
  const lockdownBanner = document.getElementById("lockdown");
  let lockdownState = null;
  function showLockdown(state) {
    if (state === null || typeof state !== "object") return;
    lockdownState = state;
    const on = state.active === true;
    lockdownBanner.hidden = !on;
    body.dataset.lockdown = on ? (state.drill ? "drill" : "on") : "off";
    for (const fn of listeners) { try { fn("lockdown", state); } catch (e) { console.error(e); } }
    if (!on) return;
    lockdownBanner.classList.toggle("drill", state.drill === true);
    lockdownBanner.querySelector(".what").textContent = state.drill ? W.drill : W.lockdown;
    lockdownBanner.querySelector(".why").textContent = typeof state.reason === "string" ? state.reason : "";
    const at = Date.parse(state.started_at);
    lockdownBanner.querySelector(".since").textContent = Number.isNaN(at) ? "" : W.lockdown_since
      .replace("{time}", new Date(at).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", hour12: false}))
      .replace("{who}", String(state.started_by || ""));
  }
  // The district's notices nobody has acknowledged yet: the most urgent on every page, until someone on duty has.
  const noticeBanner = document.getElementById("district-notice");
  let noticesState = null;
  function showNotices(list) {
    if (!Array.isArray(list)) return;
    noticesState = list.filter(n => n !== null && typeof n === "object" && typeof n.title === "string");
    noticeBanner.hidden = noticesState.length === 0;
    body.dataset.notices = String(noticesState.length);
    if (!noticesState.length) return;
    const first = noticesState[0], level = ["alert", "drill"].includes(first.level) ? first.level : "info";
    noticeBanner.className = level;
    noticeBanner.querySelector(".what").textContent = W["notice_" + level];
    noticeBanner.querySelector(".title").textContent = first.title;
    noticeBanner.querySelector(".more").textContent = noticesState.length > 1
      ? W.more.replace("{n}", String(noticesState.length - 1)) : "";
  }
  function relay(type, data) { if (channel && leading) channel.postMessage({type, data}); }
  function openStream() {
    if (stream) stream.close();
    stream = new EventSource("/api/alarms/stream");
    for (const type of ["snapshot", "clock", "alarm", "police", "lockdown", "notices"]) {
      stream.addEventListener(type, e => { handle(type, e.data); relay(type, e.data); });
    }
    stream.onerror = () => { if (stream.readyState !== EventSource.OPEN) { setLink(false); relay("down", null); } };
  }
  function lease() { try { return JSON.parse(localStorage.getItem(LEASE_KEY) || "null"); } catch (e) { return null; } }
  function elect() {
    if (!channel) { if (!stream) openStream(); return; }  // no channel: this tab keeps its own stream
    const held = lease();
    if (leading && held && held.id !== ME && held.at > claimedAt) {  // two claimed at once: the later one leads
      leading = false; if (stream) { stream.close(); stream = null; }
      channel.postMessage({type: "hello"});
      return;
    }
    if (leading || !held || held.id === ME || Date.now() - held.at > LEASE_MS) {
      claimedAt = Date.now();
      localStorage.setItem(LEASE_KEY, JSON.stringify({id: ME, at: claimedAt}));
      if (!leading) { leading = true; openStream(); }
    }
    body.dataset.leader = leading ? "1" : "0";  // which tab holds the stream (the tests close it)
  }
  if (channel) {
    channel.onmessage = m => {
      const msg = m.data || {};
      if (msg.type === "hello") {  // a tab just opened: the leader tells it what is open now
        if (leading && body.dataset.stream === "up") {
          channel.postMessage({type: "snapshot", data: JSON.stringify([...alarms.values()])});
          channel.postMessage({type: "clock", data: JSON.stringify({now: new Date(now()).toISOString()})});
          if (lockdownState) channel.postMessage({type: "lockdown", data: JSON.stringify(lockdownState)});
          if (noticesState) channel.postMessage({type: "notices", data: JSON.stringify(noticesState)});
        }
      } else if (msg.type === "leader-gone") {
        elect();
      } else if (!leading) {
        handle(msg.type, msg.data);
      }
    };
    addEventListener("pagehide", () => {
      if (!leading) return;
      leading = false;
      if (lease()?.id === ME) localStorage.removeItem(LEASE_KEY);
      channel.postMessage({type: "leader-gone"});
    });
  }
  // A gateway that hangs keeps the connection open and says nothing: the clock pings stop. A follower that hears
  // nothing has lost its leader as well, or the leader the gateway: both show it, and the election goes on.
  setInterval(() => {
    elect();
    if (body.dataset.stream === "up" && lastMessage && Date.now() - lastMessage > STALE_S * 1000) {
      setLink(false);
      if (leading) openStream();
    }
    renderDown();
    if (!bar.hidden) renderBar();
    for (const fn of listeners) { try { fn("tick"); } catch (e) { console.error(e); } }
  }, 1000);

  window.CampusAlarms = {
    alarms, accept, valid, open, waiting, age, label, zoneName, latest, words: W, config: CFG,
    listen(fn) { listeners.push(fn); },
    changed,
  };
  body.dataset.stream = "connecting";
  elect();
  if (channel && !leading) channel.postMessage({type: "hello"});
})();
