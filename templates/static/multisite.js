/* atlas: the chooser of two models on a site of several models (compare by depth). Every pair also has a plain
   link on the page, so the page works without this script. */
(function () {
  "use strict";
  var form = document.getElementById("pair-form");
  if (!form) return;
  var message = document.getElementById("pair-message");
  form.hidden = false;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var a = form.elements.a.value, b = form.elements.b.value;
    if (a === b) { message.hidden = false; return; }
    message.hidden = true;
    window.location.href = (form.dataset.root || "") + "compare/" + encodeURIComponent(a) + "--" +
      encodeURIComponent(b) + ".html";
  });
})();
