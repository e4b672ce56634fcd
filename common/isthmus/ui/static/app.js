// isthmus UI: the runs list's "diff the two checked runs". Plain JavaScript, nothing fetched.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("compare");
  if (!form) return;
  var button = document.getElementById("diff-button");
  var picks = form.querySelectorAll("input.pick");
  function chosen() {
    return Array.prototype.filter.call(picks, function (p) { return p.checked; });
  }
  Array.prototype.forEach.call(picks, function (p) {
    p.addEventListener("change", function () {
      var c = chosen();
      if (c.length > 2) { p.checked = false; c = chosen(); }
      button.disabled = c.length !== 2;
    });
  });
  form.addEventListener("submit", function (event) {
    var c = chosen();
    if (c.length !== 2) { event.preventDefault(); return; }
    // the list is newest first: diff the older (a) against the newer (b)
    document.getElementById("diff-a").value = c[1].value;
    document.getElementById("diff-b").value = c[0].value;
  });
});
