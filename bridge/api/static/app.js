"use strict";
// The bridge's chat page: plain DOM code, no framework and no build step, so it can be served
// straight from the package. It talks to /api/v1 with fetch and keeps itself current through
// one WebSocket. User-supplied text only ever goes into the page through textContent, except
// agents' replies, which are Markdown: see renderMarkdown (marked, then DOMPurify). Files are
// fetched with the token (never by a plain link, which would have none): images shown inline
// as data: URLs, others saved as downloads; their names are text.

const API = "/api/v1";
const TOKEN_KEY = "bridge.token";
const SEEN_KEY = "bridge.seen"; // {sessionId: message_count last seen}, for unread dots
const SESSION_PAGE = 30;
const MESSAGE_PAGE = 50;
const SEARCH_DEBOUNCE_MS = 300;
const NEAR_BOTTOM_PX = 80;
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 15000;
const FIRST_READY_WAIT_MS = 3000;

const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem(TOKEN_KEY),
  me: null, // GET /me: whose messages are "mine" (right-aligned)
  devLoginTried: false, // dev login is tried once per page load, never in a loop
  agents: null, // cached GET /agents items
  sessions: [], // the list, most recent activity first
  sessionsCursor: null,
  loadingMore: false,
  listGeneration: 0, // bumped on every reload so a slow, stale response is dropped
  fetchingSessions: new Set(), // ids being fetched because a live event named them
  open: null, // the conversation shown: {id, session, messages: Map by id, cursor, touched}
  seen: loadSeen(),
  chosenFiles: [], // File objects picked for the next message of the open chat
  images: new Map(), // attachment id -> {src, promise}: each inline image fetched once
};

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/** Build an element; children that are strings become text nodes (never parsed as HTML). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (value !== undefined && value !== null) node[key] = value;
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** crypto.randomUUID only exists on secure origins; a bridge on a LAN address over plain
 *  http is not one, so fall back to getRandomValues (available everywhere). */
function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  const part = (from, to) => hex.slice(from, to);
  return `${part(0, 8)}-${part(8, 12)}-${part(12, 16)}-${part(16, 20)}-${part(20)}`;
}

function relativeTime(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 60) return "now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  if (seconds < 7 * 86400) return `${Math.floor(seconds / 86400)}d`;
  return new Date(iso).toLocaleDateString();
}

function clockTime(iso) {
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return today ? time : `${date.toLocaleDateString()} ${time}`;
}

function loadSeen() {
  try {
    return JSON.parse(localStorage.getItem(SEEN_KEY)) ?? {};
  } catch {
    return {}; // a corrupt entry only costs the unread dots
  }
}

function markSeen(session) {
  if ((state.seen[session.id] ?? -1) === session.message_count) return;
  state.seen[session.id] = session.message_count;
  localStorage.setItem(SEEN_KEY, JSON.stringify(state.seen));
}

// ---------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------

// Agents answer in Markdown. marked (vendor/marked.umd.js) turns it into HTML in which raw
// HTML from the reply is escaped into text and links are only http(s)/mailto; DOMPurify
// (vendor/purify.min.js) then keeps only the elements and attributes below, so no script,
// event handler, style or frame can come out of a reply whatever marked produced.
const SAFE_HREF = /^(?:https?:|mailto:)/i;
const MARKDOWN_TAGS = [
  "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote",
  "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "a",
  "table", "thead", "tbody", "tr", "th", "td",
];
const PURIFY = {
  ALLOWED_TAGS: MARKDOWN_TAGS,
  ALLOWED_ATTR: ["href", "title", "rel", "target", "align", "start"],
  ALLOWED_URI_REGEXP: SAFE_HREF,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  KEEP_CONTENT: true, // a dropped element's text stays, as text
  RETURN_DOM_FRAGMENT: true, // nodes, not a string: nothing is parsed again after cleaning
};

const escapeHtml = (text) =>
  text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The href if it is an absolute http(s) or mailto URL, else null. */
function safeHref(href) {
  const value = String(href ?? "").trim();
  if (!SAFE_HREF.test(value)) return null;
  try {
    return SAFE_HREF.test(new URL(value).protocol) ? value : null;
  } catch {
    return null;
  }
}

const markdown = new marked.Marked({
  gfm: true, // tables, ~~strike~~, bare URLs become links
  breaks: false, // a single newline stays a newline in the text; CSS shows it (pre-wrap)
  async: false,
  renderer: {
    // Raw HTML in a reply (block or inline) is shown as the text it is.
    html: ({ text }) => escapeHtml(text),
    link({ href, title, tokens }) {
      const label = this.parser.parseInline(tokens);
      const url = safeHref(href);
      if (url === null) return label; // javascript:, data:, relative...: the label only
      const titled = title ? ` title="${escapeHtml(title)}"` : "";
      return `<a href="${escapeHtml(url)}"${titled} rel="noopener noreferrer" target="_blank">${label}</a>`;
    },
    // No images from replies: the alt text, as a link when the source is a web address.
    image({ href, text }) {
      const url = safeHref(href);
      const alt = escapeHtml(text || "image");
      return url === null
        ? alt
        : `<a href="${escapeHtml(url)}" rel="noopener noreferrer" target="_blank">${alt}</a>`;
    },
  },
});

// Whatever survives in an <a>, it opens apart from this page (which holds the token).
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("rel", "noopener noreferrer");
    node.setAttribute("target", "_blank");
  }
});

/** ``text`` as Markdown, as a fragment of harmless nodes. */
function renderMarkdown(text) {
  // Trimmed: no stray newline text at the ends (the text of a one-line reply is just it).
  return DOMPurify.sanitize(markdown.parse(String(text ?? "")).trim(), PURIFY);
}

// ---------------------------------------------------------------------------------------
// Errors and the API
// ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function showError(message) {
  $("banner-text").textContent = message;
  $("banner").hidden = false;
}

function reportError(error) {
  if (error instanceof ApiError && error.status === 401) return; // sign-in is shown instead
  if (error instanceof TypeError) showError(`Cannot reach the bridge: ${error.message}`);
  else showError(error.message || String(error));
  console.error(error);
}

/** Wrap an async event handler so a failure lands in the banner instead of the console. */
const guard = (fn) => (...args) => fn(...args).catch(reportError);

async function api(method, path, body) {
  const token = state.token;
  const headers = { Authorization: `Bearer ${token}` };
  const form = body instanceof FormData; // the browser sets its multipart Content-Type
  if (body !== undefined && !form) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined || form ? body : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (response.status === 401) {
    // Several calls may fail with the same dead token; only the first one signs out.
    if (token === state.token) signOut({ retry: true });
    throw new ApiError("not signed in", 401, "unauthorized");
  }
  if (!response.ok) {
    const message = data?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new ApiError(message, response.status, data?.error?.code);
  }
  return data;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// ---------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------

/** On a loopback bridge the server hands out a token without asking; elsewhere it says 403. */
async function devLogin() {
  state.devLoginTried = true;
  try {
    const response = await fetch(`${API}/auth/dev-login`, { method: "POST" });
    if (!response.ok) return null;
    return (await response.json()).token ?? null;
  } catch {
    return null;
  }
}

async function start() {
  if (!state.token && !state.devLoginTried) {
    state.token = await devLogin();
    if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
  }
  if (!state.token) {
    showSignIn();
    return;
  }
  let me;
  try {
    me = state.me = await api("GET", "/me");
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      reportError(error);
      showSignIn();
    }
    return; // a 401 has already sent us back to sign-in
  }
  $("signin").hidden = true;
  $("app").hidden = false;
  $("user-name").textContent = me.name;
  // Wait (briefly) for the socket first, so nothing that happens between loading the list
  // and the socket's start point is missed.
  await Promise.race([connectLive(), sleep(FIRST_READY_WAIT_MS)]);
  await Promise.all([reloadSessions(), route()]).catch(reportError);
}

function showSignIn(message = "") {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("signin-error").hidden = !message;
  $("token-input").value = "";
  $("token-input").focus();
}

/** Forget the token and everything loaded with it. ``retry``: it was rejected (401), so take
 *  the token another tab stored since (a local sign-in replaces the previous one), else try
 *  dev login (if not tried yet), and otherwise ask, saying why. */
function signOut({ retry = false } = {}) {
  const hadToken = Boolean(state.token);
  const stored = localStorage.getItem(TOKEN_KEY);
  const newer = retry && stored !== state.token ? stored : null;
  state.token = null;
  state.me = null;
  if (!newer) localStorage.removeItem(TOKEN_KEY);
  stopLive();
  state.sessions = [];
  state.sessionsCursor = null;
  state.listGeneration += 1;
  state.agents = null;
  state.images.clear();
  closeConversation();
  renderSessions();
  if (newer) {
    state.token = newer;
    start().catch(reportError);
  } else if (retry) {
    if (!state.devLoginTried) start().catch(reportError);
    else showSignIn(hadToken ? "That token was not accepted (revoked or mistyped)." : "");
  } else {
    showSignIn();
  }
}

// ---------------------------------------------------------------------------------------
// Live updates
// ---------------------------------------------------------------------------------------

// Close codes the server uses (README, "WebSocket"): 4401 the token was revoked (sign in
// again); 4408 this page did not take its frames in time, 1001 the server is going away,
// 1011 the server failed, 1009 a frame we sent was too big: reconnect and resume. Any other
// close (the network, a refused upgrade) also reconnects. A resume too far behind is answered
// with a "reset" frame: the page then reloads from REST and carries on from the reset's id, so
// it never asks for the same replay twice.
const REVOKED = 4401;
const STABLE_MS = 30000; // a connection that lasted this long resets the reconnect backoff
const TAB_TOKEN_WAIT_MS = 2000;

const live = {
  socket: null,
  lastEventId: null, // highest event id applied (or the first ready frame's), for resume
  backoff: BACKOFF_FIRST_MS,
  openedAt: 0, // when the current socket opened: quick repeated drops back off further
  timer: null,
  onReady: null, // resolves connectLive()'s promise on the next ready frame
};

function setStatus(name, text) {
  const status = $("connection-status");
  status.dataset.state = name;
  status.textContent = text;
}

/** Open the socket; the promise settles when the server says it is ready. */
function connectLive() {
  clearTimeout(live.timer);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = encodeURIComponent(state.token);
  const socket = new WebSocket(`${scheme}//${location.host}${API}/ws?token=${token}`);
  live.socket = socket;
  const ready = new Promise((resolve) => (live.onReady = resolve));
  socket.addEventListener("open", () => {
    live.openedAt = Date.now();
    // Replay what we missed while away; a first connection has nothing to catch up on.
    if (live.lastEventId !== null) {
      socket.send(JSON.stringify({ type: "resume", last_event_id: live.lastEventId }));
    }
  });
  socket.addEventListener("message", (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    onFrame(frame).catch(reportError);
  });
  socket.addEventListener("close", (event) => {
    if (live.socket !== socket) return; // stopped on purpose, or already replaced
    live.socket = null;
    if (event.code === REVOKED) {
      // A local sign-in in another tab revokes our token at once but stores its own only
      // when its answer arrives: give it that moment before signing out.
      const revoked = state.token;
      setStatus("reconnecting", "reconnecting…");
      tokenFromAnotherTab(revoked, TAB_TOKEN_WAIT_MS).then(() => {
        if (state.token === revoked) signOut({ retry: true });
      });
      return;
    }
    // Everything else: reconnect and resume. A connection that had been up for a while
    // starts the backoff afresh; one dropped again at once (too slow, a failing server)
    // waits longer each time, so the page never hammers the server.
    if (live.openedAt && Date.now() - live.openedAt >= STABLE_MS) {
      live.backoff = BACKOFF_FIRST_MS;
    }
    live.openedAt = 0;
    setStatus("reconnecting", "reconnecting…");
    live.timer = setTimeout(connectLive, live.backoff);
    live.backoff = Math.min(live.backoff * 2, BACKOFF_MAX_MS);
  });
  return ready;
}

/** Resolves once another tab has stored a token other than ``revoked``, or after ``ms``. */
function tokenFromAnotherTab(revoked, ms) {
  return new Promise((resolve) => {
    const stored = () => {
      const token = localStorage.getItem(TOKEN_KEY);
      return Boolean(token) && token !== revoked;
    };
    if (stored()) {
      resolve();
      return;
    }
    const done = () => {
      window.removeEventListener("storage", onStorage);
      clearTimeout(timer);
      resolve();
    };
    const onStorage = (event) => {
      if (event.key === TOKEN_KEY && stored()) done();
    };
    const timer = setTimeout(done, ms);
    window.addEventListener("storage", onStorage);
  });
}

function stopLive() {
  clearTimeout(live.timer);
  const socket = live.socket;
  live.socket = null; // before close(), so the close handler does not reconnect
  socket?.close();
  live.lastEventId = null;
  live.backoff = BACKOFF_FIRST_MS;
  setStatus("connecting", "connecting…");
}

async function onFrame(frame) {
  if (typeof frame.id === "number") {
    live.lastEventId = Math.max(live.lastEventId ?? 0, frame.id);
  }
  switch (frame.type) {
    case "ready":
      live.lastEventId ??= frame.last_event_id;
      setStatus("live", "live");
      live.onReady?.();
      break;
    case "resumed":
      live.lastEventId = Math.max(live.lastEventId ?? 0, frame.last_event_id ?? 0);
      setStatus("live", "live");
      break;
    case "reset": // too far behind to replay: start over from the server's current state
      live.lastEventId = Math.max(live.lastEventId ?? 0, frame.last_event_id ?? 0);
      setStatus("live", "live");
      await Promise.all([reloadSessions(), state.open ? openSession(state.open.id) : null]);
      break;
    case "error": // the server refused a frame we sent: a bug here, not the user's doing
      console.warn("live socket:", frame.message);
      break;
    case "message.created":
    case "message.updated":
      applyMessage(frame.message, frame.type === "message.created");
      break;
    case "message.delta": // a reply's whole text so far, before it is stored
      applyDelta(frame);
      break;
    case "session.updated":
      applySession(frame.session);
      break;
    default:
      break; // unknown frames are ignored, so the server can add new ones
  }
}

function applyMessage(message, created) {
  const open = state.open;
  if (open && open.id === message.session_id) {
    open.touched.add(message.id);
    upsertMessages([message]);
    // A fold happens before an answer: the summary shown may have changed with the reply.
    if (message.role === "assistant" && $("session-details").open) {
      loadSummary().catch(reportError);
    }
  }
  const session = state.sessions.find((s) => s.id === message.session_id);
  if (!session) {
    fetchIntoList(message.session_id);
    return;
  }
  if (created) session.message_count += 1; // session.updated, when it comes, has the truth
  if (!session.last_message_at || Date.parse(message.created_at) > activityMs(session)) {
    session.last_message_at = message.created_at;
  }
  sortSessions();
  renderSessions();
}

/** Show a reply as it is being written: a draft bubble after the message it answers, until
 *  the stored reply (``reply_to`` the same message) arrives. Deltas are not stored or
 *  replayed, so one for a chat that is not open is simply dropped. */
function applyDelta(frame) {
  const open = state.open;
  if (!open || open.id !== frame.session_id || typeof frame.text !== "string") return;
  const answered = [...open.messages.values()].some(
    (m) => m.role !== "user" && m.reply_to === frame.reply_to,
  );
  if (answered) return; // a late delta after the reply itself
  open.drafts.set(frame.reply_to, frame.text);
  upsertMessages([]);
}

/** A session we have not listed got a message: fetch it so it can appear in the list. */
async function fetchIntoList(id) {
  if (state.fetchingSessions.has(id)) return;
  state.fetchingSessions.add(id);
  try {
    applySession(await api("GET", `/sessions/${id}`));
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) reportError(error);
  } finally {
    state.fetchingSessions.delete(id);
  }
}

// ---------------------------------------------------------------------------------------
// Session list
// ---------------------------------------------------------------------------------------

function sessionTitle(session) {
  return session.title || session.group_name || "New chat";
}

// Who talks in a session: the agent, or "asker → agent" for an agent-to-agent session.
function sessionAgents(session) {
  return session.peer_agent ? `${session.peer_agent} → ${session.agent}` : session.agent;
}

const activity = (s) => s.last_message_at ?? s.created_at;
// Compared as dates, not strings: an ISO time without a fraction would sort wrongly as text.
const activityMs = (s) => Date.parse(activity(s));

function sortSessions() {
  state.sessions.sort((a, b) => activityMs(b) - activityMs(a) || b.id - a.id);
}

/** Whether the current filters would list ``session`` (mirrors the server's q/channel). */
function matchesFilters(session) {
  if (session.deleted_at) return false;
  const channel = $("channel-filter").value;
  if (channel && session.source_channel !== channel) return false;
  const q = $("search").value.trim().toLowerCase();
  const text = `${session.title ?? ""}\n${session.group_name ?? ""}`.toLowerCase();
  return !q || text.includes(q);
}

function applySession(session) {
  const list = state.sessions;
  const index = list.findIndex((s) => s.id === session.id);
  if (index >= 0) list.splice(index, 1);
  const last = list.at(-1);
  // Beyond the loaded pages it will arrive with "load more"; inserting it now would duplicate it.
  const beyondLoaded = state.sessionsCursor && last && activityMs(session) < activityMs(last);
  if (matchesFilters(session) && !beyondLoaded) {
    list.push(session);
    sortSessions();
  }
  renderSessions();
  if (state.open?.id === session.id) {
    if (session.deleted_at) {
      location.hash = "";
    } else {
      state.open.session = session;
      renderConversationHead();
    }
  }
}

async function reloadSessions() {
  const generation = ++state.listGeneration;
  const page = await api("GET", `/sessions${sessionQuery(null)}`);
  if (generation !== state.listGeneration) return; // filters changed meanwhile
  state.sessions = page.items;
  state.sessionsCursor = page.next_cursor;
  renderSessions();
}

/** The next page of the list; true if one was loaded (false: none left, or busy). */
async function loadMoreSessions() {
  if (!state.sessionsCursor || state.loadingMore) return false;
  const generation = state.listGeneration;
  state.loadingMore = true;
  try {
    const page = await api("GET", `/sessions${sessionQuery(state.sessionsCursor)}`);
    if (generation !== state.listGeneration) return false;
    const known = new Set(state.sessions.map((s) => s.id));
    state.sessions.push(...page.items.filter((s) => !known.has(s.id)));
    state.sessionsCursor = page.next_cursor;
    renderSessions();
    return true;
  } finally {
    state.loadingMore = false;
  }
}

function sessionQuery(cursor) {
  return query({
    q: $("search").value.trim(),
    channel: $("channel-filter").value,
    limit: SESSION_PAGE,
    cursor,
  });
}

function renderSessions() {
  const openId = state.open?.id;
  const items = state.sessions.map((session) => {
    if (session.id === openId) markSeen(session); // the open chat is read by definition
    const unread = session.id !== openId && session.message_count > (state.seen[session.id] ?? 0);
    const time = el("time", {
      className: "when",
      dateTime: activity(session),
      title: new Date(activity(session)).toLocaleString(),
      textContent: relativeTime(activity(session)),
    });
    const button = el(
      "button",
      { type: "button", className: "session-button" },
      el("span", { className: "session-title", textContent: sessionTitle(session) }),
      unread ? el("span", { className: "unread-dot", title: "New messages" }) : null,
      el(
        "span",
        { className: "session-meta" },
        el("span", { className: "agent", textContent: sessionAgents(session) }),
        el("span", {
          className: `badge channel-${session.source_channel}`,
          textContent: session.source_channel,
        }),
        time,
      ),
    );
    button.addEventListener("click", () => selectSession(session.id));
    return el(
      "li",
      {
        className: `session${session.id === openId ? " active" : ""}${unread ? " unread" : ""}`,
        dataset: { sessionId: String(session.id), channel: session.source_channel },
      },
      button,
    );
  });
  $("session-list").replaceChildren(...items);
  $("load-more").hidden = !state.sessionsCursor;
}

// ---------------------------------------------------------------------------------------
// Conversation
// ---------------------------------------------------------------------------------------

function selectSession(id) {
  location.hash = `#/sessions/${id}`; // route() does the rest, so Back works too
}

/** Show what the URL names: a conversation (#/sessions/5) or, on a phone, just the list. */
async function route() {
  const match = /^#\/sessions\/(\d+)$/.exec(location.hash);
  const id = match ? Number(match[1]) : null;
  $("app").classList.toggle("show-conversation", id !== null);
  if (id === null) closeConversation();
  else if (state.open?.id !== id) await openSession(id);
}

async function openSession(id) {
  const open = {
    id,
    session: state.sessions.find((s) => s.id === id) ?? null,
    messages: new Map(),
    cursor: null,
    touched: new Set(), // ids updated live while history loads: history must not undo them
    drafts: new Map(), // message id -> the text so far of the reply to it (message.delta)
  };
  state.open = open;
  chooseFiles([]); // files picked for another chat are not sent to this one
  $("empty-state").hidden = true;
  $("messages").hidden = false;
  $("message-list").replaceChildren();
  $("load-older").hidden = true;
  renderSessions();
  renderConversationHead();
  try {
    const [session, page] = await Promise.all([
      open.session ?? api("GET", `/sessions/${id}`),
      api("GET", `/sessions/${id}/messages${query({ limit: MESSAGE_PAGE })}`),
    ]);
    if (state.open !== open) return; // another chat was opened meanwhile
    open.session = session;
    open.cursor = page.next_cursor;
    upsertMessages(page.items.filter((m) => !open.touched.has(m.id)), { scroll: "bottom" });
    renderConversationHead();
  } catch (error) {
    if (state.open === open && error instanceof ApiError && error.status === 404) {
      location.hash = "";
    }
    throw error;
  }
}

function closeConversation() {
  state.open = null;
  $("conversation-head").hidden = true;
  $("messages").hidden = true;
  $("composer-area").hidden = true;
  $("read-only-note").hidden = true;
  $("session-details").hidden = true;
  $("empty-state").hidden = false;
  $("message-list").replaceChildren();
  renderSessions();
}

function renderConversationHead() {
  const session = state.open?.session;
  $("conversation-head").hidden = false;
  if (!session) {
    $("conversation-title").textContent = "Loading…";
    $("conversation-meta").textContent = "";
    $("composer-area").hidden = true;
    $("session-details").hidden = true;
    return;
  }
  renderSessionDetails(session);
  $("conversation-title").textContent = sessionTitle(session);
  const who = session.participant?.display_name;
  $("conversation-meta").textContent = [sessionAgents(session), session.source_channel, who]
    .filter(Boolean)
    .join(" · ");
  // Replies to Slack, Discord, ... conversations belong in those apps; the API refuses them.
  const writable = session.source_channel === "web" && !session.deleted_at;
  $("composer-area").hidden = !writable;
  $("read-only-note").hidden = writable;
  $("read-only-note").textContent = writable
    ? ""
    : `This conversation comes from ${session.source_channel}; it is read-only here.`;
}

/** The collapsible "Session details" of the open chat: a few facts for everyone, and for
 *  admins the session's long memory (the summary of what the agent's window dropped), which
 *  is fetched when the details are open. Everything goes in as text. */
function renderSessionDetails(session) {
  $("session-details").hidden = false;
  const facts = [
    ["Session", `#${session.id}`],
    ["Agent", sessionAgents(session)],
    ["Channel", session.source_channel],
    ["Conversation", session.external_conv_id],
    ["Messages", String(session.message_count)],
    ["Started", session.created_at ? new Date(session.created_at).toLocaleString() : ""],
  ];
  $("session-facts").replaceChildren(
    ...facts.flatMap(([name, value]) => [
      el("dt", { textContent: name }),
      el("dd", { textContent: value }),
    ]),
  );
  const admin = Boolean(state.me?.is_admin);
  $("session-memory").hidden = !admin;
  if ($("session-memory").dataset.session !== String(session.id)) {
    $("session-memory").dataset.session = String(session.id); // never show another chat's
    $("session-summary").textContent = "";
    $("session-summary-meta").textContent = "";
  }
  if (admin && $("session-details").open) loadSummary().catch(reportError);
}

async function loadSummary() {
  const open = state.open;
  if (!open || !state.me?.is_admin) return;
  const memory = await api("GET", `/sessions/${open.id}/summary`);
  if (state.open !== open) return; // another chat was opened meanwhile
  const none = memory.summary === null;
  $("session-summary").textContent = none ? "No summary yet." : memory.summary;
  $("session-summary").classList.toggle("none", none);
  $("session-summary-meta").textContent = none
    ? ""
    : `Up to message #${memory.through_message_id}, updated ${clockTime(memory.updated_at)}`;
}

function isNearBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
}

/** Merge messages into the open conversation and redraw. ``scroll``: "bottom" forces it,
 *  "keep" holds the current view still (older messages added above), default follows the
 *  bottom only if the reader was already there. */
function upsertMessages(messages, { scroll = "auto" } = {}) {
  const open = state.open;
  const box = $("messages");
  const follow = scroll === "bottom" || (scroll === "auto" && isNearBottom());
  const fromBottom = box.scrollHeight - box.scrollTop;
  for (const message of messages) {
    open.messages.set(message.id, message);
    // The stored reply replaces its draft; so does the end of the wait without one.
    if (message.role !== "user") open.drafts.delete(message.reply_to);
    else if (message.state === "failed") open.drafts.delete(message.id);
  }
  const sorted = [...open.messages.values()]
    .filter((m) => !m.deleted_at)
    .sort((a, b) => a.id - b.id);
  const items = [];
  for (const message of sorted) {
    items.push(messageElement(message));
    if (open.drafts.has(message.id)) items.push(draftElement(message.id, open.drafts.get(message.id)));
  }
  // Drafts for messages not loaded (yet) go last.
  const shown = new Set(sorted.map((m) => m.id));
  for (const [replyTo, text] of open.drafts) {
    if (!shown.has(replyTo)) items.push(draftElement(replyTo, text));
  }
  // While the agent works on an answer and nothing of it has come yet, show it "thinking"
  // where its reply will appear.
  const answered = new Set(sorted.filter((m) => m.role !== "user").map((m) => m.reply_to));
  if (sorted.some((m) => isAwaitingReply(m) && !open.drafts.has(m.id) && !answered.has(m.id))) {
    items.push(typingElement());
  }
  $("message-list").replaceChildren(...items);
  $("load-older").hidden = !open.cursor;
  if (follow) box.scrollTop = box.scrollHeight;
  else if (scroll === "keep") box.scrollTop = box.scrollHeight - fromBottom;
}

const isAwaitingReply = (m) =>
  m.role === "user" && (m.state === "pending" || m.state === "answering");

const agentSlug = () => state.open?.session?.agent ?? "assistant";

function typingElement() {
  return el(
    "li",
    { id: "typing", className: "message role-assistant typing", title: "thinking" },
    el(
      "div",
      { className: "message-head" },
      el("span", { className: "sender", textContent: agentSlug() }),
    ),
    el("div", { className: "content thinking", textContent: "thinking…" }),
  );
}

/** The reply to message ``replyTo`` as written so far (no id yet: it is not stored). */
function draftElement(replyTo, text) {
  return el(
    "li",
    {
      className: "message role-assistant draft",
      title: "being written",
      dataset: { role: "assistant", draftFor: String(replyTo) },
    },
    el(
      "div",
      { className: "message-head" },
      el("span", { className: "sender", textContent: agentSlug() }),
      el("span", { className: "status thinking", textContent: "writing…" }),
    ),
    el("div", { className: "content markdown" }, renderMarkdown(text)),
  );
}

/** Agents write Markdown; people's own messages are shown exactly as typed. */
function messageContent(message) {
  if (message.role === "assistant" || message.sender?.kind === "agent") {
    return el("div", { className: "content markdown" }, renderMarkdown(message.content));
  }
  return el("div", { className: "content", textContent: message.content });
}

function messageElement(message) {
  // In a shared thread another agent's message is a "user" message sent by that agent.
  const sender =
    message.role === "assistant"
      ? (message.sender?.display_name ?? agentSlug())
      : (message.sender?.display_name ?? (message.role === "system" ? "system" : "unknown"));
  const byAgent = message.sender?.kind === "agent";
  // A user message waiting for its answer gets the typing bubble (see upsertMessages); an
  // agent message still on its way to the chat gets a "…" marker of its own.
  const delivering = message.role !== "user" && message.delivery === "pending";
  const waiting = isAwaitingReply(message) || delivering;
  const failed =
    message.delivery === "failed" || (message.role === "user" && message.state === "failed");
  const mine = state.me !== null && message.sender?.id === state.me.participant_id;
  let status = null;
  if (failed) {
    status = el("span", {
      className: "status failed",
      title: message.error || "failed",
      textContent: "failed",
    });
  } else if (delivering) {
    status = el("span", {
      className: "status thinking",
      title: "being delivered",
      textContent: "…",
    });
  }
  return el(
    "li",
    {
      className: [
        "message",
        `role-${message.role}`,
        mine ? "mine" : "",
        byAgent ? "by-agent" : "",
        failed ? "failed" : "",
        waiting ? "waiting" : "",
      ].join(" "),
      dataset: {
        messageId: String(message.id),
        role: message.role,
        senderKind: message.sender?.kind ?? "",
        state: message.state ?? "",
        delivery: message.delivery ?? "",
      },
    },
    el(
      "div",
      { className: "message-head" },
      el("span", { className: "sender", textContent: sender }),
      byAgent && message.role === "user"
        ? el("span", { className: "badge agent-badge", textContent: "agent" })
        : null,
      el("time", {
        dateTime: message.created_at,
        title: new Date(message.created_at).toLocaleString(),
        textContent: clockTime(message.created_at),
      }),
      status,
    ),
    messageContent(message),
    attachmentsElement(message),
  );
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

// The types the server serves as themselves (never SVG, which can carry script).
const INLINE_IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** A file's bytes, fetched with the token (a plain link or <img src> would carry none). */
async function fetchFile(file) {
  const response = await fetch(file.url, { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    const message = data?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new ApiError(`${file.name}: ${message}`, response.status, data?.error?.code);
  }
  return response.blob();
}

const dataUrl = (blob) =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });

/** Fill ``img`` with the image; fetched once per page, since the list is redrawn often. */
function showImage(img, file) {
  let entry = state.images.get(file.id);
  if (!entry) {
    entry = { src: null, promise: null };
    entry.promise = fetchFile(file)
      .then(dataUrl)
      .then((src) => (entry.src = src))
      .catch((error) => {
        state.images.delete(file.id); // a later redraw tries again
        throw error;
      });
    state.images.set(file.id, entry);
  }
  if (entry.src) img.src = entry.src;
  else entry.promise.then((src) => (img.src = src)).catch(reportError);
}

async function download(file) {
  const url = URL.createObjectURL(await fetchFile(file));
  const link = el("a", { href: url, download: file.name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function attachmentElement(file) {
  const dataset = { attachmentId: String(file.id), state: file.state };
  if (file.state !== "stored") {
    const why = file.state === "pending" ? "not fetched yet" : file.reason || file.state;
    return el("li", {
      className: "attachment not-kept",
      dataset,
      textContent: `${file.name} (${why})`,
    });
  }
  if (INLINE_IMAGES.has(file.content_type)) {
    const img = el("img", { alt: file.name, title: file.name });
    showImage(img, file);
    return el("li", { className: "attachment image", dataset }, img);
  }
  const button = el("a", { href: "#", className: "download", textContent: file.name });
  button.addEventListener("click", (event) => {
    event.preventDefault();
    download(file).catch(reportError);
  });
  return el(
    "li",
    { className: "attachment file", dataset },
    button,
    el("span", { className: "meta", textContent: ` ${formatSize(file.size)}` }),
  );
}

function attachmentsElement(message) {
  const files = message.attachments ?? [];
  if (!files.length) return null;
  return el("ul", { className: "attachments" }, ...files.map(attachmentElement));
}

/** The files to send with the next message, listed (by name, as text) above the composer. */
function chooseFiles(files) {
  state.chosenFiles = files;
  const items = files.map((file, index) => {
    const remove = el("button", {
      type: "button",
      title: "Remove",
      ariaLabel: `Remove ${file.name}`,
      textContent: "×",
    });
    remove.addEventListener("click", () => chooseFiles(files.filter((_, i) => i !== index)));
    return el("li", {}, `${file.name} (${formatSize(file.size)})`, remove);
  });
  $("chosen-files").replaceChildren(...items);
  $("chosen-files").hidden = !files.length;
}

async function loadOlder() {
  const open = state.open;
  if (!open?.cursor) return;
  const page = await api(
    "GET",
    `/sessions/${open.id}/messages${query({ limit: MESSAGE_PAGE, before: open.cursor })}`,
  );
  if (state.open !== open) return;
  open.cursor = page.next_cursor;
  upsertMessages(page.items.filter((m) => !open.messages.has(m.id)), { scroll: "keep" });
}

// ---------------------------------------------------------------------------------------
// Composer and session actions
// ---------------------------------------------------------------------------------------

async function send() {
  const open = state.open;
  const text = $("composer").value;
  const files = state.chosenFiles;
  if (!open || (!text.trim() && !files.length) || $("send").disabled) return;
  const path = `/sessions/${open.id}/messages`;
  // One id for both tries: if the first POST did arrive, the server keeps one copy.
  let body = { text, client_message_id: newId() };
  if (files.length) {
    const form = new FormData();
    form.append("text", text);
    form.append("client_message_id", body.client_message_id);
    for (const file of files) form.append("file", file, file.name);
    body = form;
  }
  $("send").disabled = true;
  try {
    let message;
    try {
      message = await api("POST", path, body);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // only a network error is worth a retry
      message = await api("POST", path, body);
    }
    $("composer").value = "";
    if (state.chosenFiles === files) chooseFiles([]);
    if (state.open === open) upsertMessages([message], { scroll: "bottom" });
  } finally {
    $("send").disabled = false;
    $("composer").focus();
  }
}

async function openNewChatDialog() {
  state.agents ??= (await api("GET", "/agents")).items;
  const select = $("agent-select");
  select.replaceChildren(
    ...state.agents.map((agent) =>
      el("option", { value: agent.slug, textContent: `${agent.name} (${agent.slug})` }),
    ),
  );
  $("new-chat-title").value = "";
  $("new-chat-dialog").showModal();
  select.focus();
}

async function createChat(event) {
  event.preventDefault(); // we close the dialog ourselves, after the POST worked
  const title = $("new-chat-title").value.trim();
  const body = { agent: $("agent-select").value, ...(title ? { title } : {}) };
  const session = await api("POST", "/sessions", body);
  $("new-chat-dialog").close();
  applySession(session);
  if (!state.sessions.some((s) => s.id === session.id)) {
    state.sessions.unshift(session); // shown even if the filters would hide it
    renderSessions();
  }
  selectSession(session.id);
  $("composer").focus();
}

async function renameChat() {
  const session = state.open?.session;
  if (!session) return;
  const title = prompt("New title for this chat", session.title ?? "");
  if (title === null || !title.trim()) return;
  applySession(await api("PATCH", `/sessions/${session.id}`, { title: title.trim() }));
}

async function deleteChat() {
  const session = state.open?.session;
  if (!session || !confirm(`Delete "${sessionTitle(session)}"?`)) return;
  applySession(await api("DELETE", `/sessions/${session.id}`));
}

// ---------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------

let searchTimer = null;

function wire() {
  $("banner-close").addEventListener("click", () => ($("banner").hidden = true));
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token-input").value.trim();
    localStorage.setItem(TOKEN_KEY, state.token);
    start().catch(reportError);
  });
  $("sign-out").addEventListener("click", (event) => {
    event.preventDefault();
    signOut();
  });
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer); // wait for a pause in typing rather than query per key
    searchTimer = setTimeout(guard(reloadSessions), SEARCH_DEBOUNCE_MS);
  });
  $("channel-filter").addEventListener("change", guard(reloadSessions));
  $("load-more").addEventListener("click", guard(loadMoreSessions));
  // "Infinite" list: fetch the next page as soon as the Load more button scrolls into view.
  // Observing afresh after each page makes the observer report again if it is still in view
  // (it otherwise only reports changes), so a tall screen fills up.
  const more = $("load-more");
  const observer = new IntersectionObserver((entries) => {
    if (!entries.some((entry) => entry.isIntersecting)) return;
    loadMoreSessions()
      .then((loaded) => {
        if (!loaded) return;
        observer.unobserve(more);
        observer.observe(more);
      })
      .catch(reportError);
  });
  observer.observe(more);
  $("load-older").addEventListener("click", guard(loadOlder));
  $("composer").addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a newline; an IME composition's Enter is not ours.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      guard(send)();
    }
  });
  $("send").addEventListener("click", guard(send));
  $("attach").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", () => {
    chooseFiles([...state.chosenFiles, ...$("file-input").files]);
    $("file-input").value = ""; // the same file may be picked again
  });
  $("new-chat").addEventListener("click", guard(openNewChatDialog));
  $("new-chat-form").addEventListener("submit", guard(createChat));
  $("new-chat-cancel").addEventListener("click", () => $("new-chat-dialog").close());
  $("rename").addEventListener("click", guard(renameChat));
  $("delete").addEventListener("click", guard(deleteChat));
  $("session-details").addEventListener("toggle", () => {
    if ($("session-details").open) loadSummary().catch(reportError);
  });
  $("back").addEventListener("click", () => (location.hash = ""));
  window.addEventListener("hashchange", guard(route));
  setInterval(renderSessions, 60_000); // keep the relative times honest
}

wire();
start().catch(reportError);
