// Shared text for the holder and scanner pages: problem codes in plain Chinese and the labels
// both pages show. One table, loaded by both pages before their own script.
(function () {
  "use strict";

  // Problem `code` (app/errors.py) -> what the person in front of the screen should read.
  // tests/web/test_messages.py parses this block: keep one `code: "text",` per line.
  const MESSAGES = {
    invalid_request: "请求内容有误，请检查后重试",
    unsupported_id_type: "暂只支持居民身份证",
    invalid_id_number: "身份证号码有误，请核对",
    person_not_enrolled: "未查询到参保信息，参保信息可能尚未同步",
    face_verification_required: "需要先完成人脸识别验证",
    channel_signature_invalid: "渠道签名校验失败，请从渠道应用重新进入",
    channel_request_replayed: "请求已过期，请从渠道应用重新进入",
    channel_unknown: "不支持该渠道",
    unauthorized: "登录已过期，请从渠道应用重新进入",
    forbidden: "没有权限进行此操作",
    not_found: "未找到相关内容",
    method_not_allowed: "不支持该操作",
    token_malformed: "这不是有效的医保电子凭证二维码，请让参保人重新出示",
    token_signature_invalid: "二维码签名校验失败，可能是伪造或被篡改的二维码，请勿受理",
    token_unknown_key: "无法识别该二维码的签发密钥，请让参保人刷新二维码后重新出示",
    token_expired: "二维码已过期，请让参保人刷新后重新出示",
    token_already_used: "该二维码已被使用过，请让参保人刷新后重新出示",
    token_revoked: "该二维码已失效（凭证已挂失或亲情账户已解除），请勿受理",
    voucher_not_found: "未找到该医保电子凭证",
    voucher_suspended: "电子凭证已挂失，请通过渠道重新验证后恢复",
    voucher_cancelled: "该医保电子凭证已注销，无法使用",
    institution_inactive: "本机构暂未开通医保电子凭证受理，请联系医保经办机构",
    region_not_enrolled: "参保人在该参保地没有有效的参保信息",
    remote_care_filing_required: "参保人不在本地参保且未办理异地就医备案，请先办理备案（急诊除外）",
    family_limit_reached: "亲情账户最多可添加5位成员",
    family_link_not_found: "未找到该亲情账户",
    family_link_exists: "已添加过该亲情账户",
    filing_not_found: "未找到该异地就医备案",
    reverification_required: "需要通过渠道重新验证身份",
    name_mismatch: "姓名与参保信息不一致",
    channel_not_bound: "该渠道未绑定医保电子凭证",
    pin_required: "参保人尚未设置医保支付密码，请先设置后再结算",
    pin_invalid: "医保支付密码错误",
    pin_locked: "医保支付密码错误次数过多，已锁定24小时",
    pin_too_weak: "密码过于简单，请换一个",
    pin_change_required: "参保人需先修改初始支付密码后才能结算",
    rate_limited: "操作太频繁，请稍后再试",
    payload_too_large: "上传的内容过大（图片不超过2 MB）",
    unsupported_media_type: "不支持该文件类型",
    service_unavailable: "服务暂时不可用，请稍后重试",
    internal_error: "系统繁忙，请稍后重试",
  };

  // The scanner desk reads some refusals differently: staff act on them, not the holder.
  const DESK_MESSAGES = {
    unauthorized: "机构登录已过期，请重新登录后再核验",
    forbidden: "本机构不能办理该用途的业务（定点零售药店仅限药店购药和查询），请改选用途后重新扫码核验",
    voucher_suspended: "该电子凭证已挂失，请参保人通过渠道重新验证后恢复",
    pin_locked: "参保人医保支付密码已锁定，暂不能结算；可先挂号或查询，或请参保人通过渠道重置密码",
    rate_limited: "扫码太频繁，请稍后再试",
  };

  // A refused scan in the holder's own records: what happened at the desk, said to the holder
  // (the tables above speak to whoever must act now, e.g. "请让参保人刷新后重新出示" to the desk).
  const RECORD_MESSAGES = {
    token_already_used: "二维码已被使用过",
    token_expired: "二维码已过期",
    token_revoked: "二维码已失效（凭证挂失或亲情账户解除）",
    voucher_suspended: "电子凭证已挂失",
    voucher_cancelled: "电子凭证已注销",
    region_not_enrolled: "在该参保地没有有效的参保信息",
    remote_care_filing_required: "未办理异地就医备案",
    pin_required: "尚未设置医保支付密码",
    pin_change_required: "需先修改初始支付密码",
    pin_locked: "医保支付密码已锁定",
    forbidden: "该机构不能办理此项业务（定点零售药店仅限购药和查询）",
  };

  const NETWORK_ERROR = "网络连接失败，请检查网络后重试";
  const SIGN_IN_FAILED = "客户端ID或密钥不正确";

  // Region codes people meet most; anything else is shown as the code itself.
  const REGIONS = {
    "110000": "北京市",
    "310000": "上海市",
    "320682": "如皋市",
    "410700": "新乡市",
    "440300": "深圳市",
  };

  const INSURANCE_TYPES = { employee: "职工医保", resident: "居民医保" };

  const PURPOSES = {
    registration: "挂号",
    outpatient_settlement: "门诊结算",
    inpatient_settlement: "住院结算",
    pharmacy: "药店购药",
    query: "查询",
    emergency: "急诊",
  };

  const RELATIONS = {
    parent: "父母", child: "子女", spouse: "配偶", grandparent: "祖父母/外祖父母",
    grandchild: "孙子女/外孙子女", sibling: "兄弟姐妹", guardian: "监护人", other: "其他亲属",
  };

  const GENDERS = { male: "男", female: "女", M: "男", F: "女", "1": "男", "2": "女", 男: "男", 女: "女" };

  const RECORD_KINDS = {
    activation: "激活电子凭证", bind: "绑定渠道", unbind: "解绑渠道", session: "登录",
    reverification: "身份重新验证", scan: "扫码使用", region_switch: "切换参保地",
    family_link: "添加亲情账户", family_accept: "确认亲情账户", family_end: "解除亲情账户",
    loss_report: "挂失", reinstate: "恢复使用", pin_set: "设置支付密码", pin_change: "修改支付密码",
    pin_reset: "重置支付密码", pin_locked: "支付密码锁定", pin_free_limit: "设置免密额度",
    phone_change: "更换手机号", filing_create: "异地就医备案", filing_cancel: "取消异地就医备案",
    qr_issued_for_member: "亲属代为出示二维码", cancellation: "注销电子凭证",
  };

  // `key` is one of `table`'s own entries (not an inherited name such as "constructor").
  function has(table, key) {
    return key != null && Object.prototype.hasOwnProperty.call(table, key);
  }

  function label(table, key) {
    return has(table, key) ? table[key] : (key == null ? "" : String(key));
  }

  // Read a problem+json body into {code, message, retryAfter}; never throws.
  async function readProblem(response, desk) {
    let code = "";
    try {
      const body = await response.json();
      code = (body && typeof body.code === "string") ? body.code : "";
    } catch (_) { /* not JSON: fall back on the status below */ }
    if (!code) code = response.status >= 500 ? "service_unavailable" : "invalid_request";
    const retry = parseInt(response.headers.get("Retry-After") || "", 10);
    return { code: code, message: message(code, desk), retryAfter: isNaN(retry) ? null : retry };
  }

  // The sentence for a problem code; `desk` picks the scanner desk's wording where it differs.
  function message(code, desk) {
    if (desk && has(DESK_MESSAGES, code)) return DESK_MESSAGES[code];
    return has(MESSAGES, code) ? MESSAGES[code] : "操作未成功，请稍后重试";
  }

  function recordReason(code) {
    return has(RECORD_MESSAGES, code) ? RECORD_MESSAGES[code] : message(code);
  }

  function regionName(code) {
    return label(REGIONS, code);
  }

  window.EV = Object.freeze({
    MESSAGES: MESSAGES,
    NETWORK_ERROR: NETWORK_ERROR,
    SIGN_IN_FAILED: SIGN_IN_FAILED,
    PURPOSES: PURPOSES,
    message: message,
    recordReason: recordReason,
    readProblem: readProblem,
    regionName: regionName,
    insuranceType: function (t) { return label(INSURANCE_TYPES, t); },
    purpose: function (p) { return label(PURPOSES, p); },
    relation: function (r) { return label(RELATIONS, r); },
    gender: function (g) { return label(GENDERS, g); },
    recordKind: function (k) { return label(RECORD_KINDS, k); },
  });
})();
