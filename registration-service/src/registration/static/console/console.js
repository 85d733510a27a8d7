// The console's only script: keyboard shortcuts, confirmations, auto-submitting filters and
// live refresh of lists.  Every page works without it.
(function () {
  "use strict";

  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }

  // "g" then a letter follows a tab's data-shortcut; "/" focuses the search field;
  // "n" follows the page's primary "new" link.
  var pendingG = false;
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (pendingG) {
      pendingG = false;
      var tab = document.querySelector('[data-shortcut="' + event.key + '"]');
      if (tab) { event.preventDefault(); tab.click(); }
      return;
    }
    if (event.key === "g") { pendingG = true; setTimeout(function () { pendingG = false; }, 1500); return; }
    if (event.key === "/") {
      var search = document.querySelector("[data-search]");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
      return;
    }
    if (event.key === "n") {
      var create = document.querySelector('[data-shortcut-key="n"]');
      if (create) { event.preventDefault(); create.click(); }
    }
  });

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  document.addEventListener("change", function (event) {
    var auto = event.target.closest("[data-autosubmit]");
    if (!auto) return;
    var form = auto.tagName === "FORM" ? auto : auto.form;
    if (form) form.requestSubmit();
  });

  // A region with data-live="URL" is replaced by the HTML fragment at URL every few seconds,
  // unless the operator is interacting with it.
  var live = document.querySelector("[data-live]");
  if (live) {
    var refresh = function () {
      if (document.hidden || live.contains(document.activeElement)) return;
      fetch(live.getAttribute("data-live"), { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) { if (html !== null) live.innerHTML = html; })
        .catch(function () {});
    };
    setInterval(refresh, Number(live.getAttribute("data-live-interval") || 3000));
  }
})();
