// Canopy console: refreshes the parts of a page marked data-live every few seconds,
// without reloading the page (forms and scroll position stay as they are).
(function () {
  "use strict";
  var EVERY_MS = 5000;
  if (!document.querySelector("[data-live]")) return;
  function refresh() {
    fetch(location.href, { credentials: "same-origin", headers: { "X-Canopy-Refresh": "1" } })
      .then(function (r) {
        if (r.redirected) { location.href = r.url; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var next = el.id && fresh.getElementById(el.id);
          if (next) el.replaceWith(document.importNode(next, true));
        });
      })
      .catch(function () { /* the console is restarting: try again at the next tick */ })
      .then(function () { setTimeout(refresh, EVERY_MS); });
  }
  setTimeout(refresh, EVERY_MS);
})();
