//! Self-contained HTML reports: one file with inline CSS, figures embedded as PNG data URIs, and a
//! few lines of inline script that record on `<body>` how many figures decoded
//! (`data-figures-loaded` / `data-figures-total`) and how many script or resource errors happened
//! (`data-errors`), so a headless browser can check a report without a test framework. Nothing
//! is fetched from the network; the file can be mailed or archived as it is.

use base64::Engine;

/// A figure: a caption and PNG bytes.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Shown under the image (plain text).
    pub caption: String,
    /// The PNG file's bytes.
    pub png: Vec<u8>,
}

/// A table of plain-text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

/// One section of a report.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Heading (plain text).
    pub title: String,
    /// Paragraphs (plain text).
    pub paragraphs: Vec<String>,
    /// Tables, in order.
    pub tables: Vec<Table>,
    /// Figures, in order.
    pub figures: Vec<Figure>,
}

/// Escapes text for HTML content and attributes.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}\
.sub{color:#666;margin-top:0}figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}\
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555;max-width:600px}\
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}nav a{margin-right:1em}p{max-width:70em}";

const SCRIPT: &str = "(function(){var errors=0;\
window.addEventListener('error',function(){errors++;document.body.setAttribute('data-errors',String(errors));},true);\
window.addEventListener('load',function(){var imgs=document.images,ok=0;\
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}\
document.body.setAttribute('data-figures-total',String(imgs.length));\
document.body.setAttribute('data-figures-loaded',String(ok));\
document.body.setAttribute('data-errors',String(errors));});})();";

/// The whole page.
pub fn page(title: &str, subtitle: &str, sections: &[Section]) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!("<title>{}</title>\n", escape(title)));
    h.push_str(&format!("<style>{STYLE}</style>\n"));
    h.push_str(&format!("<script>{SCRIPT}</script>\n</head>\n<body>\n"));
    h.push_str(&format!(
        "<h1>{}</h1>\n<p class=\"sub\">{}</p>\n",
        escape(title),
        escape(subtitle)
    ));
    if sections.len() > 2 {
        h.push_str("<nav>");
        for (i, s) in sections.iter().enumerate() {
            h.push_str(&format!("<a href=\"#s{i}\">{}</a>", escape(&s.title)));
        }
        h.push_str("</nav>\n");
    }
    let engine = base64::engine::general_purpose::STANDARD;
    for (i, s) in sections.iter().enumerate() {
        h.push_str(&format!("<h2 id=\"s{i}\">{}</h2>\n", escape(&s.title)));
        for p in &s.paragraphs {
            h.push_str(&format!("<p>{}</p>\n", escape(p)));
        }
        for t in &s.tables {
            h.push_str("<table>\n<tr>");
            for c in &t.header {
                h.push_str(&format!("<th>{}</th>", escape(c)));
            }
            h.push_str("</tr>\n");
            for r in &t.rows {
                h.push_str("<tr>");
                for c in r {
                    h.push_str(&format!("<td>{}</td>", escape(c)));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table>\n");
        }
        for f in &s.figures {
            h.push_str(&format!(
                "<figure><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption>{}</figcaption></figure>\n",
                escape(&f.caption),
                engine.encode(&f.png),
                escape(&f.caption)
            ));
        }
    }
    h.push_str(&format!(
        "<p class=\"sub\">Written by hcld {}.</p>\n</body>\n</html>\n",
        escape(crate::VERSION)
    ));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_text_and_embed_figures() {
        let s = Section {
            title: "a <b>".into(),
            paragraphs: vec!["x & y".into()],
            tables: vec![Table {
                header: vec!["site".into()],
                rows: vec![vec!["\"HH\"".into()]],
            }],
            figures: vec![Figure {
                caption: "c".into(),
                png: vec![1, 2, 3],
            }],
        };
        let h = page("t", "s", &[s]);
        assert!(
            h.contains("a &lt;b&gt;") && h.contains("x &amp; y") && h.contains("&quot;HH&quot;")
        );
        assert!(h.contains("data:image/png;base64,AQID"));
        assert!(!h.contains("http://") && !h.contains("https://"));
    }
}
