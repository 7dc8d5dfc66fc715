// aarmor approver page: refresh the inbox every 2 s without reloading the page.
// No third-party code; the fragment is rendered (and escaped) by the server.
(function () {
  "use strict";
  var box = document.getElementById("inbox");
  if (!box || !window.fetch) {
    return;
  }
  var src = box.getAttribute("data-src");
  var last = null;
  function schedule() {
    window.setTimeout(refresh, 2000);
  }
  function refresh() {
    window.fetch(src, {credentials: "same-origin", cache: "no-store", headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== last) {
          last = html;
          box.innerHTML = html;
        }
      })
      .catch(function () { /* the next round retries */ })
      .then(schedule);
  }
  schedule();
}());
