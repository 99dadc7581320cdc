// The holder page (/m/): QR code with countdown, region and person switchers, loss report, records.
// The holder access token arrives in the URL fragment, lives in sessionStorage only, and neither it
// nor any QR token text is ever written to the page or the console.
(function () {
  "use strict";

  const TOKEN_KEY = "evoucher.holder.access_token";
  const RETRY_SECONDS = 5;
  const $ = function (id) { return document.getElementById(id); };

  const state = {
    me: null,          // GET /v1/me
    member: null,      // the family link whose member's code is shown; null = self
    recordsCursor: null,
    recordsSeq: 0,
  };
  // subject: whose code is shown ("self" or a member's voucher id), to say a refresh from a switch.
  // failNotice: the notice a failed request for a code showed, taken away when a code comes.
  const qr = { seq: 0, expiresAt: 0, refreshAt: 0, refreshTimer: null, tickTimer: null, shown: false,
               subject: null, failNotice: null };

  class ApiError extends Error {
    constructor(code, text, retryAfter) {
      super(text);
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  // --- session ------------------------------------------------------------------------------

  function storage(op, value) {
    try {
      if (op === "get") return window.sessionStorage.getItem(TOKEN_KEY);
      if (op === "set") window.sessionStorage.setItem(TOKEN_KEY, value);
      if (op === "clear") window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: the page then works for this load only */ }
    return null;
  }

  let memoryToken = null;  // used only when sessionStorage is unavailable

  function takeToken() {
    const fragment = window.location.hash.replace(/^#/, "");
    if (fragment) {
      const token = new URLSearchParams(fragment).get("access_token");
      if (token) {
        memoryToken = token;
        storage("set", token);
      }
      // Drop the fragment so the token stays out of the address bar, history and shared links.
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return currentToken();
  }

  function currentToken() {
    return storage("get") || memoryToken;
  }

  function endSession(text) {
    storage("clear");
    memoryToken = null;
    stopQr();
    $("app").hidden = true;
    showNotice(text, "error");
  }

  // --- API ----------------------------------------------------------------------------------

  async function api(method, path, body) {
    const token = currentToken();
    if (!token) throw new ApiError("unauthorized", EV.message("unauthorized"), null);
    const init = {
      method: method,
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (_) {
      throw new ApiError("network", EV.NETWORK_ERROR, null);
    }
    if (resp.ok) return resp.json();
    const problem = await EV.readProblem(resp);
    if (problem.code === "unauthorized") endSession(problem.message);
    throw new ApiError(problem.code, problem.message, problem.retryAfter);
  }

  // --- notices ------------------------------------------------------------------------------

  let noticeTimer = null;
  let noticeSeq = 0;  // counts the notices shown, so that one can be taken away only while it is up

  // Returns the notice's number, for clearNotice(number).
  function showNotice(text, kind) {
    const el = $("notice");
    el.textContent = text;
    el.className = "notice notice-" + (kind || "error");
    el.hidden = false;
    window.clearTimeout(noticeTimer);
    // Errors stay until acted on. (clearNotice is called without the timer's arguments.)
    if (kind === "ok") noticeTimer = window.setTimeout(function () { clearNotice(); }, 4000);
    return ++noticeSeq;
  }

  // Hide the notice; with `only`, only if it is still notice number `only`.
  function clearNotice(only) {
    if (typeof only === "number" && only !== noticeSeq) return;
    $("notice").hidden = true;
  }

  // Said once to a screen reader (a polite live region): a new code, an expired one. The visible
  // countdown is no live region, or it would be read out every second.
  function announce(text) {
    $("qr-status").textContent = text;
  }

  // A control that is disabled or hidden while it has the focus drops it to the page, and a
  // keyboard or screen-reader user would start again from the top: hand it to `target`, or to
  // the stopped voucher's title when `target` is gone with its card.
  function refocus(target) {
    if (target && !target.disabled && target.getClientRects().length) target.focus();
    else if (!$("state-card").hidden) $("state-title").focus();
  }

  // --- rendering ----------------------------------------------------------------------------

  function guardianLinks() {
    return (state.me.family || []).filter(function (link) {
      return link.role === "guardian" && link.status === "active" && link.member && link.member.voucher_id;
    });
  }

  function usable() {
    return state.me.status === "active";
  }

  function render() {
    const me = state.me;
    $("app").hidden = false;
    renderPeople();
    renderWho();
    renderRegion(null);
    const stopped = !usable();
    $("qr-card").hidden = stopped;
    $("loss-card").hidden = stopped;
    $("state-card").hidden = !stopped;
    if (me.status === "suspended") {
      $("state-title").textContent = "电子凭证已挂失";
      $("state-text").textContent = "电子凭证已停止使用，二维码不能出示。如需恢复，请通过微信、支付宝或银行App重新验证身份。";
    } else if (me.status === "cancelled") {
      $("state-title").textContent = "电子凭证已注销";
      $("state-text").textContent = "该电子凭证已注销，无法继续使用。";
    }
  }

  function renderPeople() {
    const nav = $("people");
    const links = usable() ? guardianLinks() : [];
    nav.replaceChildren();
    nav.hidden = links.length === 0;
    if (nav.hidden) {
      state.member = null;
      return;
    }
    nav.appendChild(personChip("本人", null));
    links.forEach(function (link) {
      nav.appendChild(personChip("亲情账户: " + link.member.name_masked, link));
    });
  }

  function personChip(text, link) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.textContent = text;
    const selected = (link === null && state.member === null) ||
      (link !== null && state.member !== null && state.member.link_id === link.link_id);
    button.setAttribute("aria-pressed", selected ? "true" : "false");
    button.addEventListener("click", function () {
      if (selected) return;
      state.member = link;
      clearNotice();
      renderPeople();
      refocus($("people").querySelector("[aria-pressed=true]"));  // the chip pressed is replaced
      renderWho();
      renderRegion(null);
      // A member's code is itself a record of theirs: list the records once it is issued.
      issueQr().then(function () { loadRecords(true); });
    });
    return button;
  }

  function renderWho() {
    const member = state.member;
    $("who-name").textContent = member ? member.member.name_masked : state.me.person.name_masked;
    $("who-tag").textContent = member ? "亲情账户 · " + EV.relation(member.relation) : "本人";
  }

  // memberRegion: the region a member's QR token carries (we see no member enrolments).
  function renderRegion(memberRegion) {
    const me = state.me;
    const card = $("region-card");
    const typeEl = $("insurance-type");
    const switcher = $("region-switch");
    if (state.member) {
      card.hidden = !memberRegion;
      $("region-name").textContent = memberRegion ? EV.regionName(memberRegion) : "";
      typeEl.hidden = true;
      switcher.hidden = true;
      return;
    }
    card.hidden = !me.active_region;
    $("region-name").textContent = EV.regionName(me.active_region);
    const current = (me.enrolments || []).find(function (e) { return e.region_code === me.active_region; });
    typeEl.hidden = !current;
    typeEl.textContent = current ? EV.insuranceType(current.insurance_type) : "";
    const choices = (me.enrolments || []).filter(function (e) { return e.status === "active"; });
    switcher.hidden = !usable() || choices.length < 2;
    const select = $("region-select");
    select.replaceChildren();
    choices.forEach(function (e) {
      const option = document.createElement("option");
      option.value = e.region_code;
      option.textContent = EV.regionName(e.region_code) + "（" + EV.insuranceType(e.insurance_type) + "）";
      option.selected = e.region_code === me.active_region;
      select.appendChild(option);
    });
  }

  async function switchRegion() {
    const select = $("region-select");
    const code = select.value;
    if (code === state.me.active_region) return;
    const focused = document.activeElement === select;
    select.disabled = true;
    try {
      const out = await api("PUT", "/v1/me/active-region", { region_code: code });
      state.me.active_region = out.active_region;
      showNotice("参保地已切换为" + EV.regionName(out.active_region), "ok");
      renderRegion(null);
      issueQr();  // the code carries the region: show one for the new region at once
      loadRecords(true);
    } catch (err) {
      renderRegion(null);
      handleError(err);
    } finally {
      select.disabled = false;
      if (focused) refocus(select);
    }
  }

  // --- QR code ------------------------------------------------------------------------------

  // The service's SVG has a fixed pixel size; give it a viewBox so it scales to the box crisply.
  function svgDataUrl(svgText) {
    const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
    const svg = doc.documentElement;
    if (!svg || svg.localName !== "svg" || doc.getElementsByTagName("parsererror").length) {
      throw new ApiError("internal_error", EV.message("internal_error"), null);
    }
    const width = parseFloat(svg.getAttribute("width"));
    const height = parseFloat(svg.getAttribute("height"));
    if (!svg.hasAttribute("viewBox") && width > 0 && height > 0) {
      svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    }
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("shape-rendering", "crispEdges");
    const text = new XMLSerializer().serializeToString(svg);
    return "data:image/svg+xml;charset=utf-8," + encodeURIComponent(text);
  }

  function clearQrTimers() {
    window.clearTimeout(qr.refreshTimer);
    window.clearInterval(qr.tickTimer);
    qr.refreshTimer = qr.tickTimer = null;
  }

  function stopQr() {
    qr.seq += 1;  // any request in flight is now stale
    clearQrTimers();
    qr.shown = false;
    qr.subject = null;
    $("qr-img").hidden = true;
    $("qr-img").removeAttribute("src");
  }

  function scheduleRefresh(delayMs) {
    window.clearTimeout(qr.refreshTimer);
    qr.refreshTimer = window.setTimeout(issueQr, Math.max(0, delayMs));
  }

  async function issueQr() {
    if (!usable() || document.hidden) return;
    const seq = ++qr.seq;
    window.clearTimeout(qr.refreshTimer);
    const body = { image: "svg" };
    if (state.member) body.voucher_id = state.member.member.voucher_id;
    const subject = state.member ? state.member.member.voucher_id : "self";
    // Cleared first, so that "二维码已刷新" said again 50 s later is heard again (the words said
    // for an expired code stay until a new code replaces them).
    if (!$("qr-img").classList.contains("qr-stale")) announce("");
    if (!qr.shown) {
      $("qr-loading").hidden = false;
      $("qr-expired").hidden = true;
    }
    const sent = Date.now();  // count from the request, so a slow reply never overstates validity
    try {
      const out = await api("POST", "/v1/me/qr-tokens", body);
      if (seq !== qr.seq) return;  // superseded by a newer request (person switch, refresh)
      const src = svgDataUrl(out.qr_svg);
      qr.expiresAt = sent + out.expires_in * 1000;
      qr.refreshAt = sent + out.refresh_in * 1000;
      const img = $("qr-img");
      const retried = document.activeElement === $("qr-expired");
      img.src = src;
      img.alt = $("who-name").textContent + "的医保电子凭证二维码，请出示给医院、药店扫码";
      img.hidden = false;
      img.classList.remove("qr-stale");
      announce((qr.shown && qr.subject === subject ? "二维码已刷新，" : "已显示" + $("who-name").textContent +
                "的二维码，") + out.expires_in + " 秒内有效");
      qr.shown = true;
      qr.subject = subject;
      $("qr-loading").hidden = true;
      $("qr-expired").hidden = true;
      // The failure it said (a network down, a rate limit) is over: a retry got a code.
      if (typeof qr.failNotice === "number") clearNotice(qr.failNotice);
      qr.failNotice = null;
      if (retried) img.focus();  // the button pressed is gone: the new code, read by its alt text
      if (state.member) renderRegion(out.region_code);
      tick();
      window.clearInterval(qr.tickTimer);
      qr.tickTimer = window.setInterval(tick, 1000);
      scheduleRefresh(qr.refreshAt - Date.now());
    } catch (err) {
      if (seq !== qr.seq) return;
      $("qr-loading").hidden = true;
      if (err.code === "voucher_suspended" || err.code === "voucher_cancelled") {
        if (!state.member) {
          // Reported lost elsewhere (another channel): show the stopped state, not an error.
          state.me.status = err.code === "voucher_suspended" ? "suspended" : "cancelled";
          stopQr();
          render();
          loadRecords(true);
          return;
        }
      }
      if (err.code === "unauthorized") return;
      if (err.code === "forbidden" && state.member) {
        // The link has ended (on the other side, or from another device), and with it every
        // code shown under it: say so, and go back to the holder's own code.
        linkEnded();
        return;
      }
      qr.failNotice = handleError(err);
      if (err.code === "network" || err.code === "rate_limited" || err.code === "service_unavailable") {
        scheduleRefresh((err.retryAfter || RETRY_SECONDS) * 1000);
      }
      tick();
    }
  }

  async function linkEnded() {
    const name = state.member.member.name_masked;
    state.member = null;
    stopQr();
    try {
      state.me = await api("GET", "/v1/me");  // the links as they are now, for the switcher
    } catch (err) {
      handleError(err);
      return;
    }
    render();
    showNotice("与" + name + "的亲情账户已解除，不能再出示其二维码", "error");
    issueQr();
    loadRecords(true);
  }

  function tick() {
    const left = Math.ceil((qr.expiresAt - Date.now()) / 1000);
    const img = $("qr-img");
    if (!qr.shown || left <= 0) {
      if (qr.shown && !img.classList.contains("qr-stale")) {
        img.alt = "已失效的医保电子凭证二维码";
        announce("二维码已失效，请点击刷新");
      }
      img.classList.add("qr-stale");
      $("qr-expired").textContent = qr.shown ? "二维码已失效，点击刷新" : "点击重新生成二维码";
      $("qr-expired").hidden = false;
      $("countdown").textContent = qr.shown ? "二维码已失效" : "";
      window.clearInterval(qr.tickTimer);
      qr.tickTimer = null;
      return;
    }
    $("countdown").textContent = "二维码 " + left + " 秒后失效，到期前自动刷新";
  }

  function onVisibility() {
    if (!state.me || !usable()) return;
    if (document.hidden) {
      clearQrTimers();  // no refreshes while nobody can see the code
      return;
    }
    if (qr.shown) {
      // The phone may have slept past the code's expiry: say so at once, not only when a fresh
      // code arrives (a waking phone's network can take seconds). A tick interval set by a code
      // that arrived while hidden is replaced, not left running beside this one.
      window.clearInterval(qr.tickTimer);
      qr.tickTimer = window.setInterval(tick, 1000);
      tick();  // stops the interval again if the code has expired
    }
    if (!qr.shown || Date.now() >= qr.refreshAt) issueQr();
    else scheduleRefresh(qr.refreshAt - Date.now());
  }

  // --- loss report --------------------------------------------------------------------------

  function confirmLoss() {
    const dialog = $("loss-dialog");
    if (typeof dialog.showModal !== "function") {
      return Promise.resolve(window.confirm("确认挂失？挂失后电子凭证立即停止使用，已生成的二维码全部失效。"));
    }
    return new Promise(function (resolve) {
      function done(answer) {
        $("loss-confirm").removeEventListener("click", yes);
        $("loss-cancel").removeEventListener("click", no);
        dialog.removeEventListener("cancel", no);
        if (dialog.open) dialog.close();
        resolve(answer);
      }
      function yes() { done(true); }
      function no() { done(false); }
      $("loss-confirm").addEventListener("click", yes);
      $("loss-cancel").addEventListener("click", no);
      dialog.addEventListener("cancel", no);
      dialog.showModal();
      $("loss-cancel").focus();
    });
  }

  async function reportLoss() {
    if (!(await confirmLoss())) return;
    const button = $("loss-btn");
    button.disabled = true;
    try {
      const out = await api("POST", "/v1/me/loss-report", {});
      state.me.status = out.status;
      state.member = null;
      stopQr();
      render();
      showNotice("已挂失，电子凭证已停止使用", "ok");
      loadRecords(true);
    } catch (err) {
      handleError(err);
    } finally {
      button.disabled = false;
      refocus(button);  // the button again, or the stopped voucher's title where it is gone
    }
  }

  // --- records ------------------------------------------------------------------------------

  function formatTime(iso) {
    // Stored times are UTC; some databases drop the offset on the way out.
    const text = /([zZ]|[+-]\d\d:?\d\d)$/.test(iso) ? iso : iso + "Z";
    const d = new Date(text);
    if (isNaN(d.getTime())) return "";
    const pad = function (n) { return String(n).padStart(2, "0"); };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function recordDetail(rec) {
    const detail = rec.detail || {};
    const parts = [];
    if (rec.kind === "scan") {
      if (detail.purpose) parts.push(EV.purpose(detail.purpose));
      if (rec.institution_code) parts.push("机构 " + rec.institution_code);
      if (detail.actor_guardian) parts.push("亲属代为出示");
      if (detail.result === "ok") parts.push("成功");
      else if (detail.result) parts.push("未通过：" + EV.recordReason(detail.result));
    } else if (rec.kind === "region_switch") {
      parts.push(EV.regionName(detail.old) + " → " + EV.regionName(detail.new));
    } else if (rec.channel) {
      parts.push(channelName(rec.channel));
    }
    return parts.join(" · ");
  }

  function channelName(id) {
    if (id === "wechat") return "微信";
    if (id === "alipay") return "支付宝";
    if (id.indexOf("bank-") === 0) return "银行App";
    return id;
  }

  function recordItem(rec) {
    const li = document.createElement("li");
    li.className = "record";
    const head = document.createElement("div");
    head.className = "record-head";
    const kind = document.createElement("span");
    kind.className = "record-kind";
    kind.textContent = EV.recordKind(rec.kind);
    const time = document.createElement("time");
    time.className = "record-time";
    time.dateTime = rec.at;
    time.textContent = formatTime(rec.at);
    head.append(kind, time);
    li.appendChild(head);
    const text = recordDetail(rec);
    if (text) {
      const sub = document.createElement("div");
      sub.className = "record-sub";
      sub.textContent = text;
      li.appendChild(sub);
    }
    if (rec.kind === "scan" && rec.detail && rec.detail.result && rec.detail.result !== "ok") {
      li.classList.add("record-refused");
    }
    return li;
  }

  async function loadRecords(reset) {
    const list = $("records");
    const more = $("records-more");
    if (reset) {
      state.recordsSeq += 1;
      state.recordsCursor = null;
      list.replaceChildren();
      $("records-empty").hidden = true;
      more.hidden = true;
    }
    const seq = state.recordsSeq;
    const params = new URLSearchParams();
    if (state.member) params.set("voucher_id", state.member.member.voucher_id);
    if (!reset && state.recordsCursor) params.set("cursor", state.recordsCursor);
    const query = params.toString();
    const focused = document.activeElement === more;
    const before = list.children.length;
    more.disabled = true;
    try {
      const out = await api("GET", "/v1/me/records" + (query ? "?" + query : ""));
      if (seq !== state.recordsSeq) return;
      (out.items || []).forEach(function (rec) { list.appendChild(recordItem(rec)); });
      state.recordsCursor = out.next_cursor || null;
      more.hidden = !state.recordsCursor;
      $("records-empty").hidden = list.children.length > 0;
    } catch (err) {
      if (seq === state.recordsSeq) handleError(err);
    } finally {
      more.disabled = false;
      if (focused && more.hidden && list.children[before]) {
        // The last page is in: go on reading at its first record, where the button was.
        list.children[before].tabIndex = -1;
        list.children[before].focus();
      } else if (focused) {
        refocus(more);
      }
    }
  }

  // --- errors and start-up ------------------------------------------------------------------

  function handleError(err) {
    if (err.code === "unauthorized") return null;  // endSession already said so
    if (err.code === "voucher_suspended" && !state.member && state.me) {
      state.me.status = "suspended";
      stopQr();
      render();
    }
    return showNotice(err instanceof ApiError ? err.message : EV.message("internal_error"), "error");
  }

  async function start() {
    // A channel may hand over a new session to a page that is already open.
    window.addEventListener("hashchange", function () {
      if (/(^#|&)access_token=/.test(window.location.hash)) {
        takeToken();
        window.location.reload();
      }
    });
    if (!takeToken()) {
      $("entry").hidden = false;
      return;
    }
    $("region-select").addEventListener("change", switchRegion);
    $("qr-refresh").addEventListener("click", function () { clearNotice(); issueQr(); });
    $("qr-expired").addEventListener("click", function () { clearNotice(); issueQr(); });
    $("loss-btn").addEventListener("click", reportLoss);
    $("records-more").addEventListener("click", function () { loadRecords(false); });
    document.addEventListener("visibilitychange", onVisibility);
    try {
      state.me = await api("GET", "/v1/me");
    } catch (err) {
      if (err.code !== "unauthorized") showNotice(err.message, "error");
      return;
    }
    render();
    issueQr();
    loadRecords(true);
  }

  start();
})();
