// The memory browser's only script; every page works without it.
// "/" moves the focus to the page's first search box, as on many sites.
document.addEventListener("keydown", function (event) {
  if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
  var target = event.target;
  if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  var box = document.querySelector("form[role=search] input[type=search], form[role=search] input");
  if (box) {
    event.preventDefault();
    box.focus();
  }
});
