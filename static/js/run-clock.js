// Elapsed-time clocks (the run page, a report being read): the server renders the seconds so far in
// [data-elapsed]; elements marked [data-ticking] keep counting here between the fragment refreshes the live stream triggers.
(function () {
  "use strict";
  function format(total) {
    var s = Math.max(0, Math.floor(total));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(sec).padStart(2, "0");
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-elapsed]").forEach(function (el) {
      if (!el.dataset.renderedAt) el.dataset.renderedAt = String(now);
      var seconds = Number(el.dataset.elapsed.replace(",", "."));
      if (el.hasAttribute("data-ticking")) seconds += (now - Number(el.dataset.renderedAt)) / 1000;
      // Short finished spans read better as "4.2 s"; running clocks as 0:07, 1:02:09.
      el.textContent = seconds < 60 && !el.hasAttribute("data-ticking") ? seconds.toFixed(1) + " s" : format(seconds);
    });
  }
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSettle", tick);
  setInterval(tick, 1000);
})();
