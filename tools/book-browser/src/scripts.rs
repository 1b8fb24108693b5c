//! The JavaScript the checks run inside the page, one constant per question
//! asked of it. Each is the body of a function run by WebDriver's "execute
//! script" (inputs in `arguments`, answer by `return`), except
//! [`OFFLINE_PLAYGROUND`], which Chromium runs before every page's own
//! scripts.

/// Answers mdBook's requests to play.rust-lang.org from inside the page, so
/// a page with Rust blocks behaves the same with or without a network and
/// the check never depends on one.
pub const OFFLINE_PLAYGROUND: &str = r#"
(() => {
  const realFetch = window.fetch;
  window.fetch = function (resource, options) {
    const url = typeof resource === 'string' ? resource : (resource && resource.url) || String(resource);
    if (/^https?:\/\/play\.rust-lang\.org\//.test(url)) {
      const body = url.endsWith('/meta/crates')
        ? '{"crates":[]}'
        : '{"result":"","error":"the browser check runs offline"}';
      return Promise.resolve(new Response(body, {
        status: 200, headers: { 'Content-Type': 'application/json' } }));
    }
    return realFetch.apply(this, arguments);
  };
})();
"#;

/// The chapters of the sidebar's table of contents, as `{url, title}` (the
/// section number left out); `null` until `toc.js` has filled the sidebar.
pub const TABLE_OF_CONTENTS: &str = r#"
const links = Array.from(document.querySelectorAll('#sidebar ol.chapter a[href]'));
if (links.length === 0) return null;
return links.map(link => {
  const copy = link.cloneNode(true);
  copy.querySelectorAll('strong').forEach(number => number.remove());
  return { url: link.href, title: copy.textContent.replace(/\s+/g, ' ').trim() };
});
"#;

/// Stores the theme `arguments[0]` where mdBook looks for it on load.
pub const STORE_THEME: &str = "localStorage.setItem('mdbook-theme', arguments[0]); return true;";

/// The page once it has loaded with its fonts: its theme classes and first
/// heading; `null` before that.
pub const SETTLED_PAGE: &str = r#"
if (document.readyState !== 'complete') return null;
if (document.fonts && document.fonts.status !== 'loaded') return null;
const heading = document.querySelector('#content main h1');
return {
  classes: document.documentElement.className,
  heading: heading ? heading.textContent.replace(/\s+/g, ' ').trim() : null,
};
"#;

/// True once the theme menu is open.
pub const THEME_LIST_OPEN: &str = r#"
const list = document.getElementById('theme-list');
return !!list && getComputedStyle(list).display !== 'none';
"#;

/// True once the page shows theme `arguments[0]` and remembers it.
pub const THEME_APPLIED: &str = r#"
return document.documentElement.classList.contains(arguments[0])
  && localStorage.getItem('mdbook-theme') === arguments[0];
"#;

/// The computed styles of every item matched by the groups in
/// `arguments[0]` (`[{kind, root, parts, texts}]`: `root` a selector,
/// `parts` and `texts` selectors inside it, `texts` may end in `::before`).
/// For each part: its styles and those of an unstyled element of the same
/// tag in the same place of the page; for each text: its colour and the
/// background colours from it up to `<html>`. Also counts admonish blocks
/// left unrendered.
pub const PROBE_STYLES: &str = r#"
const PROPERTIES = ['border-top-style', 'border-top-width', 'border-top-color',
  'border-left-style', 'border-left-width', 'border-left-color', 'background-color',
  'background-image', 'margin-top', 'margin-left', 'padding-top', 'padding-left',
  'font-size', 'font-weight', 'font-style', 'box-shadow', 'border-top-left-radius'];
const host = document.querySelector('#content main') || document.body;
const plain = {};
const pick = style => Object.fromEntries(PROPERTIES.map(p => [p, style.getPropertyValue(p)]));
const unstyled = tag => {
  if (!plain[tag]) {
    const probe = document.createElement(tag);
    host.appendChild(probe);
    plain[tag] = pick(getComputedStyle(probe));
    probe.remove();
  }
  return plain[tag];
};
const backgrounds = element => {
  const list = [];
  for (let e = element; e; e = e.parentElement) list.push(getComputedStyle(e).backgroundColor);
  return list;
};
const label = element => element.id ? '#' + element.id
  : (element.querySelector('figcaption a, .admonition-title') || element).textContent.trim().slice(0, 40);
const groups = arguments[0];
const found = {};
for (const group of groups) {
  found[group.kind] = Array.from(document.querySelectorAll(group.root)).map(root => {
    const parts = group.parts.map(selector => {
      const element = selector === ':scope' ? root : root.querySelector(selector);
      if (!element) return { selector, missing: true };
      const tag = element.tagName.toLowerCase();
      return { selector, tag, style: pick(getComputedStyle(element)), unstyled: unstyled(tag) };
    });
    const texts = [];
    for (const selector of group.texts) {
      const [inner, pseudo] = selector.split('::');
      const element = inner === ':scope' ? root : root.querySelector(inner);
      if (!element) continue;
      const style = getComputedStyle(element, pseudo ? '::' + pseudo : null);
      if (pseudo && (style.content === 'none' || style.content === 'normal')) continue;
      if (!pseudo && element.textContent.trim() === '') continue;
      texts.push({ selector, color: style.color, backgrounds: backgrounds(element),
        displayed: element.getClientRects().length > 0 && style.visibility !== 'hidden' });
    }
    return { name: label(root), parts, texts };
  });
}
return {
  classes: document.documentElement.className,
  groups: found,
  unrendered_admonitions: document.querySelectorAll('code[class*="language-admonish"]').length,
};
"#;

/// The links of the page's text into the book that carry a `#fragment`, as
/// `{index, href, url}`, `index` counting every match of
/// [`FRAGMENT_LINK_SELECTOR`] (links out of the book included).
pub const FRAGMENT_LINKS: &str = r#"
return Array.from(document.querySelectorAll(arguments[0]))
  .map((link, index) => ({ index, href: link.getAttribute('href'), url: link.href,
    in_book: link.origin === location.origin && link.hash.length > 1 }))
  .filter(link => link.in_book);
"#;

/// Which links [`FRAGMENT_LINKS`] samples: every link in the text with a
/// `#`, except the self-links mdBook puts on headings and mdbook-admonish on
/// admonitions.
pub const FRAGMENT_LINK_SELECTOR: &str =
    "#content main a[href*='#']:not(.header):not(.admonition-anchor-link)";

/// Unfolds any answer the link sits in, brings link `arguments[1]` of
/// selector `arguments[0]` to the middle of the screen and returns it, or
/// `null` if it is not shown at all.
pub const LINK_TO_CLICK: &str = r#"
const link = document.querySelectorAll(arguments[0])[arguments[1]];
if (!link) return null;
// A link inside a folded answer is clicked the way a reader can: unfolded.
for (let d = link.closest('details'); d; d = d.parentElement && d.parentElement.closest('details')) {
  d.open = true;
}
link.scrollIntoView({ block: 'center', behavior: 'instant' });
return link.getClientRects().length > 0 ? link : null;
"#;

/// Where the browser is after following a link to `arguments[0]`: whether it
/// arrived (path and fragment match, page loaded), whether an element has
/// the fragment's id, and whether that element is in the viewport.
pub const FRAGMENT_TARGET: &str = r#"
const wanted = new URL(arguments[0], location.href);
const id = decodeURIComponent(wanted.hash.slice(1));
const target = document.getElementById(id);
const box = target ? target.getBoundingClientRect() : null;
return {
  arrived: location.pathname === wanted.pathname && location.hash === wanted.hash
    && document.readyState === 'complete',
  at: location.pathname + location.hash,
  found: !!target,
  in_view: !!box && box.bottom > 0 && box.top < window.innerHeight && box.right > 0
    && box.left < window.innerWidth && (box.width > 0 || box.height > 0),
  top: box ? Math.round(box.top) : null,
  viewport: window.innerHeight,
};
"#;

/// True once the search index has loaded (`searcher.js` sets
/// `window.search.hasFocus` only then).
pub const SEARCH_READY: &str =
    "return !!(window.search && typeof window.search.hasFocus === 'function');";

/// True once the search bar is shown and has the focus.
pub const SEARCH_BAR_FOCUSED: &str = r#"
const bar = document.getElementById('searchbar');
return !!bar && document.activeElement === bar && bar.getClientRects().length > 0;
"#;

/// The search results shown, as `{count, header}`; `null` while there are
/// none.
pub const SEARCH_RESULTS: &str = r#"
const items = document.querySelectorAll('#searchresults li');
if (items.length === 0) return null;
const header = document.getElementById('searchresults-header');
return { count: items.length, header: header ? header.textContent.trim() : '' };
"#;

/// The text of `print.html`'s content and its `<h1>` headings.
pub const PRINT_CONTENTS: &str = r#"
const main = document.querySelector('#content main');
if (!main) return null;
return {
  text: main.textContent.replace(/\s+/g, ' '),
  headings: Array.from(main.querySelectorAll('h1')).map(h => h.textContent.replace(/\s+/g, ' ').trim()),
};
"#;

/// Scrolls to the top, or centres the first element matching `arguments[0]`
/// when it is a selector.
pub const SCROLL_FOR_SCREENSHOT: &str = r#"
const element = arguments[0] ? document.querySelector(arguments[0]) : null;
if (element) element.scrollIntoView({ block: 'center', behavior: 'instant' });
else window.scrollTo({ top: 0, behavior: 'instant' });
return true;
"#;

/// Whether the sidebar toggle says the table of contents is shown
/// (`aria-expanded`), and whether the sidebar is hidden from assistive
/// technology (`aria-hidden`).
pub const SIDEBAR_STATE: &str = r#"
const toggle = document.getElementById('sidebar-toggle');
const sidebar = document.getElementById('sidebar');
return { expanded: toggle.getAttribute('aria-expanded') === 'true',
  hidden: sidebar.getAttribute('aria-hidden') === 'true' };
"#;
