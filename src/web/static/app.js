// Live updates: the page names its feed (data-live) and the part to reload (data-part). On
// each change the part is fetched and swapped in one step, only when it differs, keeping the
// focus and the scroll position, so nothing flickers. EventSource reconnects by itself and
// sends Last-Event-ID, so no change is missed across a dropped connection.
(function () {
  var main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) return;
  var pending = null;
  var busy = false;
  // At most one refresh per `data-every` ms: a busy migration writes many events a second.
  var every = parseInt(main.dataset.every || "1000", 10);
  function refresh() {
    pending = null;
    if (busy) { pending = setTimeout(refresh, 250); return; }
    busy = true;
    fetch(main.dataset.part, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || html === main.innerHTML) return;
        var focused = document.activeElement && document.activeElement.id;
        var y = window.scrollY;
        main.innerHTML = html;
        if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
        window.scrollTo(0, y);
        main.dispatchEvent(new CustomEvent("siirto:updated"));
      })
      .finally(function () { busy = false; });
  }
  var feed = new EventSource(main.dataset.live);
  feed.addEventListener("change", function () {
    if (pending === null) pending = setTimeout(refresh, every);
  });
})();
