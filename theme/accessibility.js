// Keyboard and screen-reader fixes to mdBook's own page, loaded on every page
// (book.toml, additional-js).
//
// 1. The sidebar toggle is a <label> for a hidden checkbox, so it cannot take
//    the focus, and the aria-label and aria-expanded mdBook gives it are not
//    allowed on a label. As a button it may carry both, and the keyboard can
//    reach it: Enter and Space press it.
// 2. A code block or a table wider than the page scrolls sideways; a reader
//    without a mouse can scroll it only if it can take the focus. Each one
//    that scrolls gets tabindex=0 (and loses it when it no longer scrolls:
//    the window grew, or hidden lines were folded away).
(function accessibility() {
    'use strict';

    function sidebarToggleAsButton() {
        const toggle = document.getElementById('sidebar-toggle');
        if (!toggle || toggle.tagName !== 'LABEL') {
            return;
        }
        toggle.setAttribute('role', 'button');
        toggle.setAttribute('tabindex', '0');
        toggle.addEventListener('keydown', function pressed(event) {
            if (event.key === 'Enter' || event.key === ' ') {
                event.preventDefault();
                toggle.click();
            }
        });
    }

    function scrolls(element) {
        const overflow = getComputedStyle(element).overflowX;
        return (overflow === 'auto' || overflow === 'scroll')
            && element.scrollWidth > element.clientWidth;
    }

    function scrollingCodeTakesFocus() {
        document.querySelectorAll('main pre, main pre > code, main .table-wrapper').forEach(function update(element) {
            const marked = element.dataset.awdScrollFocus === 'yes';
            if (scrolls(element)) {
                if (!element.hasAttribute('tabindex')) {
                    element.setAttribute('tabindex', '0');
                    element.dataset.awdScrollFocus = 'yes';
                }
            } else if (marked) {
                element.removeAttribute('tabindex');
                delete element.dataset.awdScrollFocus;
            }
        });
    }

    let pending = false;
    function later() {
        if (!pending) {
            pending = true;
            requestAnimationFrame(function run() {
                pending = false;
                scrollingCodeTakesFocus();
            });
        }
    }

    sidebarToggleAsButton();
    scrollingCodeTakesFocus();
    window.addEventListener('load', later);
    window.addEventListener('resize', later);
    if (document.fonts) {
        document.fonts.ready.then(later);
    }
    // Showing or hiding a block's hidden lines changes its width.
    const main = document.querySelector('main');
    if (main) {
        new MutationObserver(later).observe(main, {
            subtree: true, attributes: true, attributeFilter: ['class'],
        });
    }
})();
