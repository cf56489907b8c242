/* The management console's behaviour: copy buttons, the register form's callback URL field, and
   the dashboard's client picker. Bundled and loaded from static/ (no inline script: CSP). */
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Older browsers and plain HTTP: copy through a selected, off-screen text area.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "console-offscreen";
      document.body.appendChild(area);
      area.select();
      var copied = document.execCommand("copy");
      document.body.removeChild(area);
      (copied ? resolve : reject)();
    });
  }

  function selectContents(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function setUpCopyButtons() {
    document.querySelectorAll("[data-copy-from]").forEach(function (button) {
      var source = document.getElementById(button.dataset.copyFrom);
      if (!source) {
        return;
      }
      var label = button.textContent;
      button.hidden = false;
      button.addEventListener("click", function () {
        copyText(source.textContent.trim()).then(
          function () {
            button.textContent = "Copied";
            button.classList.add("console-copied");
          },
          function () {
            selectContents(source);
            button.textContent = "Press Ctrl+C to copy";
          }
        );
        window.setTimeout(function () {
          button.textContent = label;
          button.classList.remove("console-copied");
        }, 2500);
      });
    });
  }

  // A callback URL is asked for only when the chosen grant sends a browser back to the client.
  function syncCallbackFields() {
    var chosen = document.querySelector('input[name="authorization_grant_type"]:checked');
    document.querySelectorAll("[data-callback-grants]").forEach(function (field) {
      var grants = field.dataset.callbackGrants.split(" ");
      var row = field.closest(".form-row") || field.parentElement;
      row.classList.toggle("console-shown", Boolean(chosen) && grants.indexOf(chosen.value) !== -1);
    });
  }

  // A client picked with the mouse is shown at once. With the keyboard, each arrow key is a change:
  // submitting on it would leave the page at the first option passed, so Enter (or the form's
  // button) submits what the keys chose.
  var keyedSelect = null;

  document.addEventListener("keydown", function (event) {
    if (!event.target.matches("select[data-autosubmit]")) {
      return;
    }
    keyedSelect = event.target;
    if (event.key === "Enter") {
      event.preventDefault();
      event.target.form.submit();
    }
  });

  document.addEventListener("pointerdown", function () {
    keyedSelect = null;
  });

  document.addEventListener("change", function (event) {
    if (event.target.name === "authorization_grant_type") {
      syncCallbackFields();
    }
    if (event.target.matches("select[data-autosubmit]") && event.target !== keyedSelect) {
      event.target.form.submit();
    }
  });

  // One form at a time: a second click on "Save" (or "Rotate the secret") while the first is on its
  // way would be sent too, and its answer would replace the page showing the secret once.
  var submitting = false;

  document.addEventListener("submit", function (event) {
    if (event.defaultPrevented || event.target.method !== "post") {
      return;
    }
    if (submitting) {
      event.preventDefault();
    } else {
      submitting = true;
    }
  });

  // A page shown again from the back-forward cache, or whose submission was stopped or failed,
  // has nothing on its way any more. (Browsers without the Navigation API: reload the page.)
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      submitting = false;
    }
  });
  if (window.navigation) {
    window.navigation.addEventListener("navigateerror", function () {
      submitting = false;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopyButtons();
    syncCallbackFields();
  });
})();
