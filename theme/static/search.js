/* EBFlow book: the search page. Indexes window.EBFLOW_SEARCH_DOCUMENTS (one document per
 * section of every page, written by theme/render_site.py) with MiniSearch (npm minisearch)
 * in the browser, so search works offline and from file:// alike. */
(function () {
  "use strict";
  var MAX_RESULTS = 60;
  var input = document.getElementById("search-query");
  var status = document.getElementById("search-status");
  var list = document.getElementById("search-results");
  if (!input || !status || !list) { return; }
  if (typeof window.MiniSearch !== "function") {
    status.textContent = "The search library did not load.";
    return;
  }
  var documents = window.EBFLOW_SEARCH_DOCUMENTS || [];
  var index = new window.MiniSearch({
    fields: ["section", "text", "code", "page"],
    storeFields: ["url", "page", "section", "text", "code"],
    searchOptions: {boost: {section: 3, page: 1.5, code: 0.6}, prefix: true, fuzzy: 0.2,
                    combineWith: "AND"}
  });
  index.addAll(documents);

  function escapeRegExp(text) { return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

  function excerpt(text, terms) {
    var paragraph = document.createElement("p");
    paragraph.className = "search-excerpt";
    if (!text) { return paragraph; }
    var pattern = terms.length ?
      new RegExp("(" + terms.map(escapeRegExp).join("|") + ")", "gi") : null;
    var start = 0;
    if (pattern) {
      var first = text.search(pattern);
      if (first > 70) { start = text.lastIndexOf(" ", first - 60) + 1; }
    }
    var piece = text.slice(start, start + 240);
    if (start > 0) { piece = "\u2026" + piece; }
    if (start + 240 < text.length) { piece += "\u2026"; }
    var parts = pattern ? piece.split(pattern) : [piece];
    parts.forEach(function (part, i) {
      if (i % 2 === 1) {
        var mark = document.createElement("mark");
        mark.textContent = part;
        paragraph.appendChild(mark);
      } else if (part) {
        paragraph.appendChild(document.createTextNode(part));
      }
    });
    return paragraph;
  }

  function show(query) {
    query = query.trim();
    list.textContent = "";
    if (!query) {
      status.textContent = "Type a word or two: results appear as you type.";
      return;
    }
    var results = index.search(query);
    var loose = false;
    if (!results.length) {
      results = index.search(query, {combineWith: "OR"});
      loose = results.length > 0;
    }
    if (!results.length) {
      status.textContent = "Nothing matches \u201c" + query + "\u201d.";
      return;
    }
    status.textContent = results.length + (results.length === 1 ? " section" : " sections") +
      (loose ? " match some of the words of \u201c" : " match \u201c") + query + "\u201d" +
      (results.length > MAX_RESULTS ? "; the best " + MAX_RESULTS + " are shown." : ".");
    results.slice(0, MAX_RESULTS).forEach(function (result) {
      var item = document.createElement("li");
      item.className = "search-result";
      var link = document.createElement("a");
      link.className = "search-result-link";
      link.href = result.url;
      var page = document.createElement("span");
      page.className = "search-result-page";
      page.textContent = result.page;
      link.appendChild(page);
      if (result.section && result.section !== result.page) {
        var section = document.createElement("span");
        section.className = "search-result-section";
        section.textContent = result.section;
        link.appendChild(document.createTextNode(" \u203a "));
        link.appendChild(section);
      }
      item.appendChild(link);
      var terms = result.terms || [];
      var text = result.text || "";
      var inText = terms.some(function (term) { return text.toLowerCase().indexOf(term) >= 0; });
      item.appendChild(excerpt(inText || !result.code ? text : result.code, terms));
      list.appendChild(item);
    });
  }

  var timer = null;
  input.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () {
      show(input.value);
      try {
        window.history.replaceState(null, "", "?q=" + encodeURIComponent(input.value.trim()));
      } catch (error) { /* file:// pages may refuse; the results are shown all the same */ }
    }, 120);
  });
  input.form.addEventListener("submit", function (event) {
    event.preventDefault();
    show(input.value);
  });
  var query = new URLSearchParams(window.location.search).get("q") || "";
  input.value = query;
  document.querySelectorAll(".search-input").forEach(function (box) { box.value = query; });
  show(query);
  if (!query) { input.focus(); }
})();
