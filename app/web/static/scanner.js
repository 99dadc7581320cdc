// The institution desk page (/scanner/): client-credentials sign-in, purpose, camera / keyboard-wedge
// / paste / photo input, and the result card with every refusal in plain words.
(function () {
  "use strict";

  const KEYS = { token: "evoucher.scanner.access_token", expires: "evoucher.scanner.expires_at",
                 client: "evoucher.scanner.client_id", purpose: "evoucher.scanner.purpose",
                 purposes: "evoucher.scanner.scan_purposes" };
  const MAX_UPLOAD_BYTES = 2 * 1024 * 1024;
  const UPLOAD_SIDE = 2048;       // photos are scaled down to this before upload
  const MAX_TOKEN_CHARS = 2048;   // what POST /v1/scans accepts
  const DETECT_EVERY_MS = 250;
  // Without BarcodeDetector the server reads camera frames: one at a time, at most this often,
  // scaled down to this long side (a code held up to a webcam stays readable at 800 px).
  const FRAME_EVERY_MS = 500;
  const FRAME_SIDE = 800;
  const FRAME_QUALITY = 0.8;
  // A camera left on with no code in front of it stops, and no longer spends the institution's
  // share of the decoder (docs/decisions.md, "Web pages").
  const CAMERA_IDLE_MS = 2 * 60 * 1000;
  const NO_CODE = "token_malformed";  // what /scanner/decode answers for an image without a QR code
  const $ = function (id) { return document.getElementById(id); };

  // detectable: BarcodeDetector reads QR codes here; supported: a camera API exists (without
  // BarcodeDetector the server reads the frames). session: counts starts and stops, so that an
  // answer for a camera since stopped is dropped; sending: a frame is on its way to the server.
  const camera = { stream: null, timer: null, detector: null, detectable: false, supported: false,
                   session: 0, sending: false, since: 0 };
  let busy = false;
  // Codes that came (typed, pasted, read) while a verification was on its way: verified after
  // it, in order, rather than dropped with the last patient's result still on the screen.
  let waiting = [];
  // The code whose acceptance the result card shows (null when it shows anything else).
  let accepted = null;

  class ApiError extends Error {
    constructor(code, text) {
      super(text);
      this.code = code;
    }
  }

  // --- session ------------------------------------------------------------------------------

  function load(key) {
    try { return window.sessionStorage.getItem(key); } catch (_) { return null; }
  }

  function save(key, value) {
    try {
      if (value === null) window.sessionStorage.removeItem(key);
      else window.sessionStorage.setItem(key, value);
    } catch (_) { /* storage disabled: sign in again after a reload */ }
  }

  let memoryToken = null;  // used only when sessionStorage is unavailable
  let memoryPurposes = null;  // likewise

  function accessToken() {
    const token = load(KEYS.token) || memoryToken;
    const expires = parseInt(load(KEYS.expires) || "0", 10);
    if (!token || (expires && Date.now() >= expires)) return null;
    return token;
  }

  function showSignIn(text) {
    save(KEYS.token, null);
    save(KEYS.expires, null);
    save(KEYS.purposes, null);
    memoryToken = null;
    memoryPurposes = null;
    stopCamera();
    $("desk").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    const error = $("sign-in-error");
    error.textContent = text || "";
    error.hidden = !text;
    const id = load(KEYS.client);
    if (id && !$("client-id").value) $("client-id").value = id;
    ($("client-id").value ? $("client-secret") : $("client-id")).focus();
  }

  function showDesk() {
    $("sign-in").hidden = true;
    $("desk").hidden = false;
    $("sign-out").hidden = false;
    $("token-text").focus();  // ready for a keyboard-wedge scanner
  }

  // RFC 6749 §2.3.1: client id and secret are form-encoded before the Basic encoding.
  function basicCredentials(id, secret) {
    return "Basic " + window.btoa(encodeURIComponent(id) + ":" + encodeURIComponent(secret));
  }

  async function signIn(event) {
    event.preventDefault();
    const id = $("client-id").value.trim();
    const secret = $("client-secret").value;
    const error = $("sign-in-error");
    if (!id || !secret) {
      error.textContent = "请输入客户端ID和密钥";
      error.hidden = false;
      return;
    }
    const button = event.target.querySelector("button[type=submit]");
    const focused = document.activeElement === button;
    button.disabled = true;
    try {
      let resp;
      try {
        resp = await fetch("/v1/oauth/token", {
          method: "POST",
          headers: { Authorization: basicCredentials(id, secret), Accept: "application/json",
                     "Content-Type": "application/x-www-form-urlencoded" },
          body: "grant_type=client_credentials",
          cache: "no-store",
          credentials: "omit",
        });
      } catch (_) {
        throw new ApiError("network", EV.NETWORK_ERROR);
      }
      if (!resp.ok) {
        const problem = await EV.readProblem(resp, true);
        throw new ApiError(problem.code, problem.code === "unauthorized" ? EV.SIGN_IN_FAILED : problem.message);
      }
      const out = await resp.json();
      memoryToken = out.access_token;
      save(KEYS.token, out.access_token);
      // Sign in again a little before the server would refuse the token.
      save(KEYS.expires, String(Date.now() + Math.max(out.expires_in - 30, 30) * 1000));
      save(KEYS.client, id);
      // The purposes this institution's kind may scan for (a pharmacy: 药店购药 and 查询 only).
      memoryPurposes = Array.isArray(out.scan_purposes) ? out.scan_purposes : null;
      save(KEYS.purposes, memoryPurposes ? JSON.stringify(memoryPurposes) : null);
      $("client-secret").value = "";
      error.hidden = true;
      clearNotice();
      buildPurposes();
      showDesk();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
      // Disabling the focused button dropped the focus to the page: give it back on a refusal.
      if (focused && !$("sign-in").hidden) button.focus();
    }
  }

  function signOut() {
    waiting = [];
    clearResult();
    clearNotice();
    showSignIn("");
  }

  // --- API ----------------------------------------------------------------------------------

  async function api(path, init) {
    const token = accessToken();
    if (!token) throw new ApiError("unauthorized", EV.message("unauthorized", true));
    init.headers = Object.assign({ Authorization: "Bearer " + token, Accept: "application/json" },
                                 init.headers || {});
    init.cache = "no-store";
    init.credentials = "omit";
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (_) {
      throw new ApiError("network", EV.NETWORK_ERROR);
    }
    if (resp.ok) return resp.json();
    const problem = await EV.readProblem(resp, true);
    throw new ApiError(problem.code, problem.message);
  }

  // --- notices and result card --------------------------------------------------------------

  function showNotice(text, kind) {
    const el = $("notice");
    el.textContent = text;
    el.className = "notice notice-" + (kind || "error");
    el.hidden = false;
  }

  function clearNotice() {
    $("notice").hidden = true;
  }

  // Said to a screen reader (a polite live region) while the focus stays in the code field.
  function announce(text) {
    $("result-status").textContent = text;
  }

  function reveal(card) {
    card.hidden = false;
    // On a phone the card is below the input: bring it into view.
    card.scrollIntoView({ block: "nearest" });
  }

  function clearResult() {
    accepted = null;
    const card = $("result");
    card.replaceChildren();
    card.hidden = true;
    announce("");  // the next outcome is then heard even in the same words
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function resultHead(ok, purpose) {
    const head = el("div", "result-head " + (ok ? "result-ok" : "result-refused"));
    const title = el("h2", null, ok ? "核验通过" : "核验未通过");
    title.id = "result-title";  // the card's name, and a heading to jump to
    head.appendChild(title);
    head.appendChild(el("span", "result-purpose", EV.purpose(purpose)));
    return head;
  }

  function row(list, term, value, className) {
    list.appendChild(el("dt", null, term));
    list.appendChild(el("dd", className || null, value));
  }

  function presenter(p) {
    if (!p) return "本人出示";
    // The relation is the insured person's, as the presenting relative declared it.
    return "代亲属出示（出示人 " + (p.name_masked || "") +
      (p.relation ? "，参保人是其" + EV.relation(p.relation) : "") + "）";
  }

  function regionText(code) {
    const name = EV.regionName(code);
    return name === code ? code : name + "（" + code + "）";
  }

  function showAccepted(out, purpose) {
    const card = $("result");
    card.replaceChildren();
    card.appendChild(resultHead(true, purpose));
    const person = out.person || {};
    const insurance = out.insurance || {};
    const list = el("dl", "facts");
    row(list, "姓名", person.name_masked);
    row(list, "证件号码", person.id_number_masked, "mono");
    row(list, "性别", EV.gender(person.gender));
    row(list, "年龄", person.age != null ? person.age + " 岁" : "");
    row(list, "参保地", regionText(insurance.region_code));
    row(list, "险种", EV.insuranceType(insurance.insurance_type));
    row(list, "出示方式", presenter(out.presented_by), out.presented_by ? "warn" : null);
    row(list, "异地就医备案", out.remote_care_filing_id || "无（本地参保或急诊）", out.remote_care_filing_id ? "mono" : null);
    card.appendChild(list);

    const ec = el("div", "ec-token");
    ec.appendChild(el("div", "muted", "就医凭证令牌 ec_token（" + Math.round((out.ec_token_expires_in || 0) / 60) + " 分钟内有效，仅限本机构）"));
    const value = el("div", "mono ec-value", out.ec_token);
    ec.appendChild(value);
    if (navigator.clipboard && window.isSecureContext) {
      const copy = el("button", "btn btn-secondary btn-small", "复制");
      copy.type = "button";
      copy.addEventListener("click", function () {
        navigator.clipboard.writeText(out.ec_token).then(
          function () { copy.textContent = "已复制"; announce("已复制就医凭证令牌"); },
          function () { copy.textContent = "复制失败"; announce("复制失败"); });
      });
      ec.appendChild(copy);
    }
    card.appendChild(ec);
    card.appendChild(el("p", "muted small", "核验编号 " + out.scan_id));
    reveal(card);
    announce("核验通过：" + (person.name_masked || "") + "，" + EV.purpose(purpose) +
             (out.presented_by ? "，代亲属出示" : ""));
  }

  function showRefused(err, purpose) {
    accepted = null;
    const card = $("result");
    card.replaceChildren();
    card.appendChild(resultHead(false, purpose));
    card.appendChild(el("p", "refusal", err.message));
    if (err.code !== "network") card.appendChild(el("p", "muted small", "错误代码 " + err.code));
    reveal(card);
    announce("核验未通过：" + err.message);
  }

  // --- verification -------------------------------------------------------------------------

  function purpose() {
    const checked = document.querySelector("input[name=purpose]:checked");
    return checked ? checked.value : "registration";
  }

  async function verify(text) {
    const token = (text || "").trim();
    const box = $("token-text");
    if (busy) {
      if (token) {
        waiting.push(token);
        box.value = "";  // the next code is typed into an empty field
      }
      return;
    }
    clearNotice();
    if (!token) {
      showNotice("请先扫码或粘贴凭证码");
      return;
    }
    if (token === accepted) {
      // The same code read twice (a scanner in continuous mode, a double press): that patient
      // is on the card, accepted once. Sent again it would only come back as used, and that
      // refusal would replace the card and its ec_token.
      box.value = "";
      showNotice("该二维码已核验通过（见下方结果），不能再次使用；如需办理其他业务，请让参保人刷新后重新出示", "info");
      return;
    }
    const what = purpose();
    box.value = "";  // one-use codes: never leave one on the desk
    announce("");
    if (token.length > MAX_TOKEN_CHARS) {
      showRefused(new ApiError("token_malformed", EV.message("token_malformed", true)), what);
      return;
    }
    busy = true;
    $("verify-btn").disabled = true;
    try {
      const out = await api("/v1/scans", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: token, purpose: what }),
      });
      showAccepted(out, what);
      accepted = token;
    } catch (err) {
      if (err.code === "unauthorized") {
        box.value = token;  // not consumed: verify again after signing in
        waiting = [];  // nor these, which the patients can show again
        clearResult();
        showSignIn(err.message);
        return;
      }
      showRefused(err, what);
    } finally {
      busy = false;
      $("verify-btn").disabled = false;
      if (!$("desk").hidden) box.focus();
      if (waiting.length) verify(waiting.shift());
    }
  }

  // --- camera: BarcodeDetector in the browser, or frames read by the server -------------------

  async function detectorAvailable() {
    if (!("BarcodeDetector" in window)) return false;
    try {
      const formats = await window.BarcodeDetector.getSupportedFormats();
      return formats.indexOf("qr_code") >= 0;
    } catch (_) {
      return false;
    }
  }

  function detector() {
    if (!camera.detector) camera.detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    return camera.detector;
  }

  async function startCamera() {
    clearNotice();
    clearResult();
    try {
      camera.stream = await navigator.mediaDevices.getUserMedia(
        { video: { facingMode: { ideal: "environment" } }, audio: false });
    } catch (_) {
      showNotice("无法打开摄像头，请检查浏览器的摄像头权限，或改用上传图片、扫码枪录入");
      return;
    }
    camera.session += 1;
    camera.since = Date.now();
    const video = $("camera-video");
    video.srcObject = camera.stream;
    const focused = document.activeElement === $("camera-btn");
    $("camera").hidden = false;
    $("camera-btn").hidden = true;
    if (focused) $("camera-stop").focus();  // the button pressed is hidden: its counterpart
    try {
      await video.play();
    } catch (_) { /* autoplay of a muted inline video is allowed; detection still polls frames */ }
    if (camera.detectable) scanFrame();
    else pollServer();
  }

  function scanFrame() {
    camera.timer = window.setTimeout(async function () {
      if (!camera.stream) return;
      const video = $("camera-video");
      try {
        if (video.readyState >= 2) {
          const codes = await detector().detect(video);
          if (codes.length && camera.stream) {
            const text = codes[0].rawValue;
            stopCamera();
            verify(text);
            return;
          }
        }
      } catch (_) { /* a frame that cannot be read: try the next one */ }
      if (camera.stream) scanFrame();
    }, DETECT_EVERY_MS);
  }

  // The next frame for the server, unless the camera is off, a frame is still on its way, or
  // nobody can see the page (onVisibility resumes it).
  function pollServer() {
    if (camera.detectable) return;
    window.clearTimeout(camera.timer);
    if (!camera.stream || camera.sending || document.hidden) return;
    camera.timer = window.setTimeout(sendFrame, FRAME_EVERY_MS);
  }

  async function sendFrame() {
    const session = camera.session;
    if (!camera.stream || document.hidden) return;  // hidden since this frame was planned
    if (Date.now() - camera.since >= CAMERA_IDLE_MS) {
      stopCamera();
      showNotice("摄像头已关闭（2 分钟内未识别到二维码），需要时请再次点击“摄像头扫码”", "info");
      return;
    }
    let text = null;
    let failure = null;
    camera.sending = true;
    try {
      text = await readFrame();
    } catch (err) {
      failure = err;
    } finally {
      camera.sending = false;
    }
    if (session !== camera.session) {
      pollServer();  // stopped meanwhile; if started again, that camera's frames wait for this one
      return;
    }
    if (failure) {
      stopCamera();
      if (failure.code === "unauthorized") showSignIn(failure.message);
      else showRefused(failure, purpose());
    } else if (text) {
      stopCamera();
      verify(text);
    } else {
      pollServer();
    }
  }

  // The text of the code in the camera's current frame, as the server reads it; null when the
  // frame holds none (the clerk is still holding the phone up: no error for that).
  async function readFrame() {
    const video = $("camera-video");
    if (video.readyState < 2) return null;  // no frame yet
    let frame;
    try {
      frame = await scaledJpeg(video, FRAME_SIDE, FRAME_QUALITY);
    } catch (_) {
      return null;
    }
    if (!frame) return null;
    try {
      return await decodeOnServer(frame);
    } catch (err) {
      if (err.code === NO_CODE) return null;
      throw err;
    }
  }

  function stopCamera() {
    window.clearTimeout(camera.timer);
    camera.session += 1;
    if (camera.stream) camera.stream.getTracks().forEach(function (t) { t.stop(); });
    camera.stream = null;
    const video = $("camera-video");
    video.srcObject = null;
    const focused = $("camera").contains(document.activeElement);
    $("camera").hidden = true;
    if (camera.supported) $("camera-btn").hidden = false;
    if (focused && camera.supported) $("camera-btn").focus();
  }

  function onVisibility() {
    if (document.hidden || !camera.stream || camera.detectable) return;
    camera.since = Date.now();  // time the page was hidden is not time the camera looked for a code
    pollServer();
  }

  // --- photo upload -------------------------------------------------------------------------

  async function decodeInBrowser(file) {
    if (!camera.detectable) return null;
    try {
      const bitmap = await window.createImageBitmap(file);
      const codes = await detector().detect(bitmap);
      if (bitmap.close) bitmap.close();
      return codes.length ? codes[0].rawValue : null;
    } catch (_) {
      return null;  // let the server try
    }
  }

  // `source` (a photo, or the camera's <video>) as a JPEG at most `side` pixels on its long side;
  // null when the browser cannot encode it.
  async function scaledJpeg(source, side, quality) {
    const bitmap = await window.createImageBitmap(source);
    const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    if (bitmap.close) bitmap.close();
    return new Promise(function (resolve) {
      canvas.toBlob(resolve, "image/jpeg", quality);
    });
  }

  // Phone photos are often larger than the server takes: scale them down to a JPEG first.
  async function uploadable(file) {
    const plain = file.type === "image/png" || file.type === "image/jpeg";
    if (plain && file.size <= MAX_UPLOAD_BYTES) return file;
    try {
      return (await scaledJpeg(file, UPLOAD_SIDE, 0.92)) || file;
    } catch (_) {
      return file;  // the server will say what is wrong with it
    }
  }

  async function decodeOnServer(file) {
    const form = new FormData();
    const image = await uploadable(file);
    form.append("image", image, image.type === "image/png" ? "code.png" : "code.jpg");
    const out = await api("/scanner/decode", { method: "POST", body: form });
    return out.text;
  }

  async function onPhoto(event) {
    const input = event.target;
    const file = input.files && input.files[0];
    input.value = "";  // choosing the same file again must fire `change`
    if (!file) return;
    clearNotice();
    clearResult();
    const label = document.querySelector("label[for=photo-input]");
    label.classList.add("is-busy");
    try {
      const text = (await decodeInBrowser(file)) || (await decodeOnServer(file));
      await verify(text);
    } catch (err) {
      if (err.code === "unauthorized") showSignIn(err.message);
      else showRefused(err, purpose());
    } finally {
      label.classList.remove("is-busy");
    }
  }

  // --- start-up -----------------------------------------------------------------------------

  // The purposes the sign-in said this institution may scan for (`scan_purposes` of the token
  // answer), in the table's order; every purpose when it said none (a sign-in kept from before it
  // did: a purpose the kind may not use is then refused in words, `forbidden`).
  function purposesOffered() {
    let listed = memoryPurposes;
    try { listed = JSON.parse(load(KEYS.purposes) || "null") || listed; } catch (_) { /* as not said */ }
    const known = Object.keys(EV.PURPOSES);
    const offered = Array.isArray(listed) ? known.filter(function (p) { return listed.indexOf(p) >= 0; }) : [];
    return offered.length ? offered : known;
  }

  function buildPurposes() {
    const group = $("purposes");
    const saved = load(KEYS.purpose) || "registration";
    group.replaceChildren();
    purposesOffered().forEach(function (value) {
      const label = el("label", "purpose");
      const input = el("input");
      input.type = "radio";
      input.name = "purpose";
      input.value = value;
      input.checked = value === saved;
      input.addEventListener("change", function () { save(KEYS.purpose, value); });
      label.append(input, el("span", null, EV.PURPOSES[value]));
      group.appendChild(label);
    });
    if (!document.querySelector("input[name=purpose]:checked")) group.querySelector("input").checked = true;
  }

  async function start() {
    buildPurposes();
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("token-form").addEventListener("submit", function (e) { e.preventDefault(); verify($("token-text").value); });
    // A keyboard-wedge scanner types the code and presses Enter.
    $("token-text").addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        verify($("token-text").value);
      }
    });
    $("photo-input").addEventListener("change", onPhoto);
    $("camera-btn").addEventListener("click", startCamera);
    $("camera-stop").addEventListener("click", stopCamera);
    document.addEventListener("visibilitychange", onVisibility);

    if (accessToken()) showDesk();
    else showSignIn(load(KEYS.token) ? EV.message("unauthorized", true) : "");

    // Without BarcodeDetector (desktop Chrome on Windows and Linux, Firefox, desktop Safari) the
    // camera is offered all the same: the server reads its frames (sendFrame).
    camera.detectable = await detectorAvailable();
    camera.supported = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
    $("camera-btn").hidden = !camera.supported || !!camera.stream;
  }

  start();
})();
