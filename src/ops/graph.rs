//! `phoenix graph`: the dependency graph of the desired resources, as DOT or
//! Mermaid. Edges point from a resource to what it depends on.

use std::fmt::Write;

use crate::model::Desired;

pub fn dot(desired: &Desired) -> String {
    let mut s = String::from("digraph phoenix {\n  rankdir=LR;\n  node [shape=box];\n");
    for (a, r) in &desired.resources {
        let _ = writeln!(s, "  \"{a}\";");
        for d in &r.depends_on {
            let style = if desired.get(d).is_some() {
                ""
            } else {
                " [style=dashed]"
            };
            let _ = writeln!(s, "  \"{a}\" -> \"{d}\"{style};");
        }
    }
    s.push_str("}\n");
    s
}

fn mermaid_id(a: &crate::model::Address) -> String {
    a.to_string().replace('.', "_")
}

pub fn mermaid(desired: &Desired) -> String {
    let mut s = String::from("graph TD\n");
    for (a, r) in &desired.resources {
        let _ = writeln!(s, "    {}[\"{a}\"]", mermaid_id(a));
        for d in &r.depends_on {
            let arrow = if desired.get(d).is_some() {
                "-->"
            } else {
                "-.->"
            };
            let _ = writeln!(
                s,
                "    {} {arrow} {}[\"{d}\"]",
                mermaid_id(a),
                mermaid_id(d)
            );
        }
    }
    s
}
