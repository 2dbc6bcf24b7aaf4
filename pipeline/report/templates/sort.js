// Sorts the overview table by a column on a click on its heading, again to reverse.
// Rows carry their sort keys as data attributes; an empty key sorts last.
(function () {
  "use strict";
  var table = document.getElementById("overview-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var headings = table.querySelectorAll("thead th[data-sort]");
  Array.prototype.forEach.call(headings, function (heading) {
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = heading.textContent;
    heading.textContent = "";
    heading.appendChild(button);
    button.addEventListener("click", function () {
      var key = heading.getAttribute("data-sort");
      var current = heading.getAttribute("aria-sort");
      var first = heading.getAttribute("data-first") || "descending";
      var direction = current ? (current === "ascending" ? "descending" : "ascending") : first;
      var sign = direction === "ascending" ? 1 : -1;
      Array.prototype.forEach.call(headings, function (other) {
        other.removeAttribute("aria-sort");
      });
      heading.setAttribute("aria-sort", direction);
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.getAttribute("data-" + key), y = b.getAttribute("data-" + key);
        if (x === "" || y === "") {
          return (x === "") - (y === "") || a.getAttribute("data-order") - b.getAttribute("data-order");
        }
        return sign * (x - y) || a.getAttribute("data-order") - b.getAttribute("data-order");
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
}());
