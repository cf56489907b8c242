// The portal's few behaviours, from a file (the Content-Security-Policy allows no inline script):
// copy buttons, confirmations, one form submission at a time, and starting the SDK download on the
// page that delivers it.
(function () {
  "use strict";

  function copyText(button) {
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (!target) return;
    var text = target.textContent;
    var done = function () {
      button.textContent = "Copied";
      button.classList.add("copied");
      window.setTimeout(function () {
        button.textContent = "Copy";
        button.classList.remove("copied");
      }, 1600);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(target); });
    } else {
      selectText(target);
    }
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (button) copyText(button);
  });

  // One action at a time: a second click while the first is on its way would be sent too, and its
  // page would replace the first one's, e.g. a later download's, without the secret shown once.
  var submitting = false;

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (submitting || (question && !window.confirm(question))) {
      event.preventDefault();
    } else {
      submitting = true;
    }
  });

  // A page shown again from the back-forward cache takes clicks again.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) submitting = false;
  });

  // So does a page whose submission was stopped (the browser's Stop button, Escape) or failed to
  // load: nothing is on its way any more. (Browsers without the Navigation API: reload the page.)
  if (window.navigation) {
    window.navigation.addEventListener("navigateerror", function () {
      submitting = false;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var link = document.querySelector("a[data-autodownload]");
    if (link) link.click();
  });
})();
