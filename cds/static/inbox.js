// Progressive enhancement only: the inbox works without this script.
// "Select all" for the bulk-acknowledge form.
document.addEventListener("DOMContentLoaded", function () {
  var all = document.getElementById("select-all");
  var form = document.getElementById("bulk-form");
  if (!all || !form) { return; }
  var boxes = form.querySelectorAll('input[name="alert_id"]:not(:disabled)');
  if (!boxes.length) { return; }
  all.hidden = false;
  all.addEventListener("change", function () {
    boxes.forEach(function (b) { b.checked = all.checked; });
  });
});
