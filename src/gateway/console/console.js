// The console's live lists (docs/console.md#live-updates). A page whose
// changing part is marked id="live" follows /ui/events and, after each
// event, fetches itself again and puts the new part in place of the old.
// Without this script (or without JavaScript) the page is the same, only
// it changes on a reload.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  // One fetch at a time; events during it ask for one more after it.
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) {
          live.replaceChildren.apply(live, Array.from(fresh.childNodes));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }
  // The stream ends after a while and the browser opens it again; what
  // changed in between is caught by fetching on every reopening.
  var opened = false;
  var events = new EventSource("/ui/events");
  events.addEventListener("runs", refresh);
  events.addEventListener("open", function () {
    // Says the page is following the events (the browser tests wait for it).
    document.documentElement.dataset.live = "open";
    if (opened) {
      refresh();
    }
    opened = true;
  });
})();
