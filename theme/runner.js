// Run, Edit, Reset and Stop for every Rust block of the book, through the
// book's local runner (tools/book-runner). The runner's address and secret
// come from the fragment of the address the runner prints
// (#awd-runner=127.0.0.1:3001/<secret>); they are kept in localStorage of the
// book's origin. No request leaves the machine unless the reader opts in to
// the public Rust Playground for a block it can run.
(function () {
    'use strict';

    const STORE = 'awd-runner';
    const PLAYGROUND = 'awd-playground-opt-in';
    const START = 'cargo run -p book-runner -- --open';
    const LOOPBACK = /^(127\.0\.0\.1|localhost|\[::1\]):\d{1,5}$/;
    const SECRET = /^[0-9a-f]{64}$/;

    function readFragment() {
        const match = /^#awd-runner=([^/]+)\/([0-9a-f]{64})$/.exec(location.hash);
        if (match && LOOPBACK.test(match[1])) {
            localStorage.setItem(STORE, JSON.stringify({ address: match[1], token: match[2] }));
            history.replaceState(null, '', location.pathname + location.search);
        }
    }

    function runnerInfo() {
        try {
            const info = JSON.parse(localStorage.getItem(STORE) || 'null');
            if (info && LOOPBACK.test(info.address) && SECRET.test(info.token)) {
                return info;
            }
        } catch (e) {
            // Not ours: ignored.
        }
        return null;
    }

    function api(info, path, options) {
        const init = Object.assign({}, options || {});
        init.headers = Object.assign({ Authorization: 'Bearer ' + info.token }, init.headers || {});
        init.cache = 'no-store';
        return fetch('http://' + info.address + path, init);
    }

    function normalise(text) {
        const lines = text.replace(/\r/g, '').split('\n').map(function (l) { return l.replace(/\s+$/, ''); });
        while (lines.length && lines[lines.length - 1] === '') {
            lines.pop();
        }
        return lines.join('\n');
    }

    // The lines a reader sees: the block without mdBook's hidden lines.
    function visibleText(code) {
        const copy = code.cloneNode(true);
        copy.querySelectorAll('.boring').forEach(function (n) { n.remove(); });
        return normalise(copy.textContent);
    }

    function element(tag, className, text) {
        const node = document.createElement(tag);
        if (className) {
            node.className = className;
        }
        if (text !== undefined) {
            node.textContent = text;
        }
        return node;
    }

    function ordinal(n) {
        const s = ['th', 'st', 'nd', 'rd'];
        const v = n % 100;
        return n + (s[(v - 20) % 10] || s[v] || s[0]);
    }

    function pageStem() {
        const file = location.pathname.split('/').pop() || 'index.html';
        return file.replace(/\.html$/, '');
    }

    // One Rust block and its controls.
    function Block(pre, index) {
        this.pre = pre;
        this.code = pre.querySelector('code');
        this.index = index;
        this.original = visibleText(this.code);
        this.edited = null;
        this.info = null; // what the runner says about this block
        this.controller = null;
        this.run = null;
        const figure = pre.closest('figure.listing');
        const number = figure && figure.querySelector('.listing-number');
        this.name = number ? number.textContent.trim() : 'this code';
        const caption = figure && figure.querySelector('.listing-run code');
        this.command = caption ? caption.textContent.trim() : null;
        this.build();
    }

    Block.prototype.build = function () {
        const self = this;
        const bar = element('div', 'awd-runner');
        const named = this.name === 'this code' ? 'this code' : this.name;
        this.runButton = element('button', 'awd-run', 'Run');
        this.runButton.type = 'button';
        this.runButton.setAttribute('aria-label', 'Run ' + named);
        this.editButton = element('button', 'awd-edit', 'Edit');
        this.editButton.type = 'button';
        this.editButton.setAttribute('aria-label', 'Edit ' + named);
        this.editButton.setAttribute('aria-pressed', 'false');
        this.resetButton = element('button', 'awd-reset', 'Reset');
        this.resetButton.type = 'button';
        this.resetButton.setAttribute('aria-label', 'Reset ' + named + ' to the book\u2019s code');
        this.stopButton = element('button', 'awd-stop', 'Stop');
        this.stopButton.type = 'button';
        this.stopButton.setAttribute('aria-label', 'Stop the run of ' + named);
        this.stopButton.disabled = true;
        const buttons = element('div', 'awd-buttons');
        buttons.append(this.runButton, this.editButton, this.resetButton, this.stopButton);
        this.argsLabel = element('label', 'awd-args-label', 'Run with ');
        this.args = element('select', 'awd-args');
        this.argsLabel.append(this.args);
        this.argsLabel.hidden = true;
        buttons.append(this.argsLabel);
        this.status = element('div', 'awd-status');
        this.status.setAttribute('role', 'status');
        this.output = element('pre', 'awd-output');
        this.output.tabIndex = 0;
        this.output.setAttribute('aria-label', 'Output of ' + named);
        this.output.hidden = true;
        this.verdict = element('p', 'awd-verdict');
        this.verdict.hidden = true;
        this.timeline = element('div', 'awd-timeline');
        this.timeline.hidden = true;
        this.editor = element('textarea', 'awd-editor');
        this.editor.setAttribute('aria-label', 'Code of ' + named + ', editable');
        this.editor.spellcheck = false;
        this.editor.hidden = true;
        bar.append(buttons, this.status, this.output, this.verdict, this.timeline);
        this.pre.after(this.editor, bar);

        this.runButton.addEventListener('click', function () { self.start(); });
        this.editButton.addEventListener('click', function () { self.toggleEdit(); });
        this.resetButton.addEventListener('click', function () { self.reset(); });
        this.stopButton.addEventListener('click', function () { self.stop(); });
        this.editor.addEventListener('input', function () { self.edited = self.editor.value; });
        this.editor.addEventListener('keydown', function (e) {
            if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
                e.preventDefault();
                self.start();
            }
        });
    };

    Block.prototype.currentCode = function () {
        return this.edited === null ? this.original : this.edited;
    };

    Block.prototype.toggleEdit = function () {
        const editing = this.editor.hidden;
        if (editing) {
            this.editor.value = this.currentCode();
            this.editor.rows = Math.min(40, this.editor.value.split('\n').length + 1);
            this.editor.hidden = false;
            this.pre.hidden = true;
            this.editor.focus();
        } else {
            this.editor.hidden = true;
            this.pre.hidden = false;
        }
        this.editButton.setAttribute('aria-pressed', String(editing));
        this.editButton.textContent = editing ? 'Done' : 'Edit';
        // The accessible name holds the visible word (WCAG 2.5.3, label in name).
        this.editButton.setAttribute('aria-label', (editing ? 'Done editing ' : 'Edit ') + this.name);
    };

    Block.prototype.reset = function () {
        this.edited = null;
        this.editor.value = this.original;
        if (!this.editor.hidden) {
            this.toggleEdit();
        }
        this.say('Reset to the book\u2019s code.');
    };

    Block.prototype.say = function (text) {
        this.status.textContent = text;
    };

    Block.prototype.setRunning = function (running) {
        this.runButton.disabled = running;
        this.stopButton.disabled = !running;
    };

    Block.prototype.clearOutput = function () {
        this.output.textContent = '';
        this.output.hidden = true;
        this.verdict.hidden = true;
        this.verdict.textContent = '';
        this.verdict.removeAttribute('data-outcome');
        this.verdict.removeAttribute('data-as-promised');
        this.timeline.hidden = true;
        this.timeline.textContent = '';
    };

    Block.prototype.append = function (className, text) {
        this.output.hidden = false;
        const atEnd = this.output.scrollTop + this.output.clientHeight >= this.output.scrollHeight - 4;
        this.output.append(element('span', className, text));
        if (atEnd) {
            this.output.scrollTop = this.output.scrollHeight;
        }
    };

    // Without a runner: how to start one, the terminal command, and for the
    // blocks the public playground can run, an opt-in.
    Block.prototype.explain = function (why) {
        this.clearOutput();
        const help = element('div', 'awd-help');
        help.append(element('p', null, why));
        const start = element('p', null, 'To run it here, start the book\u2019s runner from the repository: ');
        start.append(element('code', null, START));
        start.append(document.createTextNode(', then open the address it prints.'));
        help.append(start);
        if (this.command) {
            const terminal = element('p', null, 'Or run it in a terminal: ');
            terminal.append(element('code', null, this.command));
            help.append(terminal);
        }
        if (!this.code.classList.contains('noplayground') && !this.code.classList.contains('compile_fail')) {
            const self = this;
            const play = element('button', 'awd-playground', 'Run it on the public Rust Playground');
            play.type = 'button';
            play.setAttribute('aria-label', 'Send ' + (this.name === 'this code' ? 'this code' : this.name) +
                ' to play.rust-lang.org and run it there');
            play.addEventListener('click', function () {
                localStorage.setItem(PLAYGROUND, 'yes');
                self.playground();
            });
            const note = element('p', null, 'This block needs only crates the Rust Playground has. ');
            note.append(play);
            note.append(document.createTextNode(' (sends the code to play.rust-lang.org).'));
            help.append(note);
        }
        this.status.textContent = '';
        this.status.append(help);
    };

    Block.prototype.playground = function () {
        const self = this;
        // The whole program: hidden lines too, with the reader's edit.
        const full = this.edited === null ? this.code.textContent : this.edited;
        this.clearOutput();
        this.say('Running on play.rust-lang.org\u2026');
        fetch('https://play.rust-lang.org/evaluate.json', {
            method: 'POST',
            mode: 'cors',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ version: 'stable', optimize: '0', code: full, edition: '2021' }),
        })
            .then(function (r) { return r.json(); })
            .then(function (r) {
                self.append('awd-stdout', r.result || 'No output');
                self.say('Finished on play.rust-lang.org.');
            })
            .catch(function (e) { self.say('The Rust Playground cannot be reached: ' + e.message); });
    };

    Block.prototype.start = function () {
        const info = runnerInfo();
        if (!info) {
            if (localStorage.getItem(PLAYGROUND) === 'yes' && !this.code.classList.contains('noplayground')) {
                this.playground();
                return;
            }
            this.explain('The book\u2019s runner is not connected to this page.');
            return;
        }
        if (!this.info) {
            const self = this;
            this.say('Asking the runner about this page\u2026');
            loadBlocks(info).then(function () {
                if (self.info) {
                    self.start();
                }
            });
            return;
        }
        this.send(info);
    };

    Block.prototype.send = function (info) {
        const self = this;
        this.clearOutput();
        this.setRunning(true);
        this.say('Starting\u2026');
        const controller = new AbortController();
        this.controller = controller;
        this.run = null;
        const args = this.args.value ? JSON.parse(this.args.value) : [];
        const body = JSON.stringify({ block: this.info.id, code: this.currentCode(), args: args });
        api(info, '/api/run', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: body,
            signal: controller.signal,
        })
            .then(function (response) {
                if (!response.ok) {
                    return response.json().catch(function () { return {}; }).then(function (refusal) {
                        if (response.status === 401) {
                            localStorage.removeItem(STORE);
                            self.explain('The runner refused this page\u2019s secret (it was restarted).');
                        } else {
                            self.say('Refused (' + response.status + '): ' + (refusal.error || response.statusText));
                        }
                    });
                }
                return self.read(response.body.getReader());
            })
            .catch(function (e) {
                if (e.name === 'AbortError') {
                    self.say('Stopped.');
                } else {
                    self.explain('The book\u2019s runner does not answer (' + e.message + ').');
                }
            })
            .finally(function () {
                self.controller = null;
                self.setRunning(false);
            });
    };

    Block.prototype.read = function (reader) {
        const self = this;
        const decoder = new TextDecoder();
        let pending = '';
        function next() {
            return reader.read().then(function (chunk) {
                if (chunk.done) {
                    return;
                }
                pending += decoder.decode(chunk.value, { stream: true });
                let at;
                while ((at = pending.indexOf('\n')) >= 0) {
                    const line = pending.slice(0, at);
                    pending = pending.slice(at + 1);
                    if (line.trim()) {
                        self.handle(JSON.parse(line));
                    }
                }
                return next();
            });
        }
        return next();
    };

    Block.prototype.handle = function (event) {
        switch (event.event) {
        case 'started':
            this.run = event.run;
            break;
        case 'queued':
            this.say('Queued: ' + ordinal(event.place) + ' in line for a build slot.');
            break;
        case 'building':
            this.say('Building: ' + event.line.trim());
            this.append('awd-build', event.line + '\n');
            break;
        case 'diagnostic':
            this.append(event.level === 'error' ? 'awd-diagnostic awd-error' : 'awd-diagnostic', event.text);
            break;
        case 'running':
            this.say('Running: ' + event.command);
            this.append('awd-build', '$ ' + event.command + '\n');
            break;
        case 'stdout':
            this.append('awd-stdout', event.text);
            break;
        case 'stderr':
            this.append('awd-stderr', event.text);
            break;
        case 'cut':
            this.append('awd-cut', '\n' + event.text + '\n');
            break;
        case 'timeline':
            this.showTimeline(event.svg);
            break;
        case 'finished':
            this.verdict.textContent = event.verdict;
            this.verdict.dataset.outcome = event.outcome;
            this.verdict.dataset.asPromised = String(event.as_promised);
            this.verdict.hidden = false;
            this.say('Finished: ' + event.verdict);
            break;
        default:
            break;
        }
    };

    Block.prototype.showTimeline = function (svgText) {
        const parsed = new DOMParser().parseFromString(svgText, 'image/svg+xml');
        const svg = parsed.documentElement;
        if (!svg || svg.nodeName !== 'svg' || parsed.querySelector('parsererror')) {
            return;
        }
        svg.querySelectorAll('script, foreignObject').forEach(function (n) { n.remove(); });
        const figure = element('figure', 'timeline');
        figure.append(document.importNode(svg, true));
        figure.append(element('figcaption', null,
            'Your run of ' + this.name + ', drawn from the events it recorded, as the book\u2019s figures are.'));
        this.timeline.append(figure);
        this.timeline.hidden = false;
    };

    Block.prototype.stop = function () {
        const info = runnerInfo();
        if (info && this.run) {
            api(info, '/api/stop', {
                method: 'POST',
                headers: { 'Content-Type': 'application/json' },
                body: JSON.stringify({ run: this.run }),
            }).catch(function () { /* the abort below ends it too */ });
        }
        if (this.controller) {
            this.controller.abort();
        }
        this.verdict.textContent = 'Stopped.';
        this.verdict.dataset.outcome = 'stopped';
        this.verdict.dataset.asPromised = 'false';
        this.verdict.hidden = false;
        this.say('Stopped.');
    };

    Block.prototype.learn = function (info) {
        this.info = info;
        this.pre.dataset.awdBlock = info.id;
        this.command = info.command;
        if (!info.editable) {
            this.editButton.hidden = true;
            this.resetButton.hidden = true;
        }
        this.args.textContent = '';
        info.variants.forEach(function (variant) {
            const option = element('option', null, variant.length ? '-- ' + variant.join(' ') : 'no switch');
            option.value = JSON.stringify(variant);
            this.args.append(option);
        }, this);
        this.argsLabel.hidden = info.variants.length < 2;
        if (normalise(info.shown) !== this.original) {
            this.say('This page is older than the book\u2019s source: reload it to run the code shown.');
        }
    };

    let blocks = [];
    let loading = null;

    function loadBlocks(info) {
        if (loading) {
            return loading;
        }
        loading = api(info, '/api/blocks?page=' + encodeURIComponent(pageStem()))
            .then(function (response) {
                if (response.status === 401) {
                    localStorage.removeItem(STORE);
                    throw new Error('the runner was restarted');
                }
                return response.json();
            })
            .then(function (answer) {
                answer.blocks.forEach(function (info, i) {
                    if (blocks[i]) {
                        blocks[i].learn(info);
                    }
                });
            })
            .catch(function (e) {
                blocks.forEach(function (b) {
                    b.explain('The book\u2019s runner does not answer (' + e.message + ').');
                });
            })
            .finally(function () { loading = null; });
        return loading;
    }

    function init() {
        readFragment();
        if (/(^|\/)print\.html$/.test(location.pathname)) {
            return; // every chapter at once: no runs there
        }
        const main = document.querySelector('main');
        if (!main) {
            return;
        }
        blocks = Array.from(main.querySelectorAll('pre > code.language-rust')).map(function (code, i) {
            return new Block(code.parentElement, i);
        });
        const info = runnerInfo();
        if (info && blocks.length) {
            loadBlocks(info);
        }
        // The runner's address opened on a page that is already shown.
        window.addEventListener('hashchange', function () {
            if (/^#awd-runner=/.test(location.hash)) {
                readFragment();
                const info = runnerInfo();
                if (info && blocks.length) {
                    blocks.forEach(function (b) { b.say(''); });
                    loadBlocks(info);
                }
            }
        });
    }

    if (document.readyState === 'loading') {
        document.addEventListener('DOMContentLoaded', init);
    } else {
        init();
    }
}());
