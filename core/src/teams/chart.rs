//! The org chart: the team tree as nested JSON, and drawn as SVG (a tidy top-down layout:
//! leaves side by side, each parent centred over its children). Pure functions of the tree.

use std::collections::HashMap;
use std::fmt::Write;

use uuid::Uuid;

use super::ChartNode;
use super::repo::TeamRow;
use crate::ids::TeamId;

/// Nests `rows` into trees (roots sorted by name, children too).
pub fn build(
    rows: &[TeamRow],
    members: &HashMap<Uuid, i64>,
    leads: &HashMap<Uuid, Vec<String>>,
) -> Vec<ChartNode> {
    let mut children: HashMap<Option<Uuid>, Vec<&TeamRow>> = HashMap::new();
    for r in rows {
        children.entry(r.parent_id).or_default().push(r);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    }
    fn node(
        r: &TeamRow,
        children: &HashMap<Option<Uuid>, Vec<&TeamRow>>,
        members: &HashMap<Uuid, i64>,
        leads: &HashMap<Uuid, Vec<String>>,
    ) -> ChartNode {
        ChartNode {
            id: TeamId(r.id),
            name: r.name.clone(),
            members: members.get(&r.id).copied().unwrap_or(0),
            leads: leads.get(&r.id).cloned().unwrap_or_default(),
            children: children
                .get(&Some(r.id))
                .map(|c| {
                    c.iter()
                        .map(|r| node(r, children, members, leads))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
    children
        .get(&None)
        .map(|roots| {
            roots
                .iter()
                .map(|r| node(r, &children, members, leads))
                .collect()
        })
        .unwrap_or_default()
}

const BOX_W: f64 = 180.0;
const BOX_H: f64 = 64.0;
const GAP_X: f64 = 24.0;
const GAP_Y: f64 = 56.0;
const MARGIN: f64 = 24.0;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Positions: x of each node's centre (in leaf slots) and depth.
fn layout(node: &ChartNode, depth: usize, next_slot: &mut f64, out: &mut Vec<(f64, usize)>) -> f64 {
    let index = out.len();
    out.push((0.0, depth));
    let x = if node.children.is_empty() {
        let x = *next_slot;
        *next_slot += 1.0;
        x
    } else {
        let xs: Vec<f64> = node
            .children
            .iter()
            .map(|c| layout(c, depth + 1, next_slot, out))
            .collect();
        (xs[0] + xs[xs.len() - 1]) / 2.0
    };
    out[index].0 = x;
    x
}

/// Draws the forest as an SVG document.
pub fn svg(roots: &[ChartNode], title: &str) -> String {
    // Pre-order positions, matching the pre-order walk below.
    let mut positions = Vec::new();
    let mut slot = 0.0;
    for r in roots {
        layout(r, 0, &mut slot, &mut positions);
    }
    let max_depth = positions.iter().map(|p| p.1).max().unwrap_or(0);
    let width = (slot.max(1.0)) * (BOX_W + GAP_X) - GAP_X + 2.0 * MARGIN;
    let height = (max_depth as f64 + 1.0) * (BOX_H + GAP_Y) - GAP_Y + 2.0 * MARGIN + 28.0;
    let cx = |slot: f64| MARGIN + slot * (BOX_W + GAP_X) + BOX_W / 2.0;
    let top = |depth: usize| MARGIN + 28.0 + depth as f64 * (BOX_H + GAP_Y);

    let mut doc = String::new();
    let _ = write!(
        doc,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = write!(
        doc,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="{MARGIN}" y="{}" font-size="16" font-weight="bold" fill="#1f2937">{}</text>"##,
        MARGIN + 6.0,
        escape(&clip(title, 80))
    );
    if roots.is_empty() {
        let _ = write!(
            doc,
            r##"<text x="{MARGIN}" y="{}" font-size="13" fill="#6b7280">No teams yet</text>"##,
            MARGIN + 40.0
        );
    }
    let mut edges = String::new();
    let mut boxes = String::new();
    let mut i = 0usize;
    fn walk(
        node: &ChartNode,
        positions: &[(f64, usize)],
        i: &mut usize,
        edges: &mut String,
        boxes: &mut String,
        cx: &dyn Fn(f64) -> f64,
        top: &dyn Fn(usize) -> f64,
    ) {
        let (slot, depth) = positions[*i];
        *i += 1;
        let x = cx(slot);
        let y = top(depth);
        let _ = write!(
            boxes,
            r##"<g><rect x="{:.1}" y="{y:.1}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="#eef2ff" stroke="#4f46e5" stroke-width="1.5"/><text x="{x:.1}" y="{:.1}" font-size="14" font-weight="bold" text-anchor="middle" fill="#111827">{}</text><text x="{x:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#374151">{} member{}</text><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#6b7280">{}</text></g>"##,
            x - BOX_W / 2.0,
            y + 22.0,
            escape(&clip(&node.name, 24)),
            y + 40.0,
            node.members,
            if node.members == 1 { "" } else { "s" },
            y + 56.0,
            escape(&clip(
                &if node.leads.is_empty() {
                    String::new()
                } else {
                    format!("lead: {}", node.leads.join(", "))
                },
                30
            )),
        );
        for child in &node.children {
            let (cslot, cdepth) = positions[*i];
            let (chx, chy) = (cx(cslot), top(cdepth));
            let mid = y + BOX_H + GAP_Y / 2.0;
            let _ = write!(
                edges,
                r##"<path d="M{x:.1},{:.1} V{mid:.1} H{chx:.1} V{chy:.1}" fill="none" stroke="#9ca3af" stroke-width="1.5"/>"##,
                y + BOX_H
            );
            walk(child, positions, i, edges, boxes, cx, top);
        }
    }
    for r in roots {
        walk(r, &positions, &mut i, &mut edges, &mut boxes, &cx, &top);
    }
    doc.push_str(&edges);
    doc.push_str(&boxes);
    doc.push_str("</svg>");
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn row(id: Uuid, parent: Option<Uuid>, name: &str) -> TeamRow {
        TeamRow {
            id,
            parent_id: parent,
            path: vec![],
            name: name.into(),
            description: String::new(),
            template: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn nests_and_draws_every_team_once() {
        let (a, b, c, d) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let rows = vec![
            row(a, None, "Company"),
            row(c, Some(a), "Sales"),
            row(b, Some(a), "Engineering <R&D>"),
            row(d, Some(b), "Platform"),
        ];
        let members = HashMap::from([(b, 3)]);
        let leads = HashMap::from([(b, vec!["Ada".to_string()])]);
        let tree = build(&rows, &members, &leads);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree[0].children[0].name, "Engineering <R&D>");
        assert_eq!(tree[0].children[0].members, 3);
        assert_eq!(tree[0].children[0].children[0].name, "Platform");
        let doc = svg(&tree, "Org chart");
        assert!(doc.starts_with("<svg") && doc.ends_with("</svg>"));
        assert_eq!(doc.matches("<rect x=").count(), 4);
        assert_eq!(doc.matches("<path ").count(), 3);
        assert!(doc.contains("Engineering &lt;R&amp;D&gt;"));
        assert!(!doc.contains("<R&D>"));
        assert!(doc.contains("lead: Ada"));
    }

    #[test]
    fn an_empty_chart_is_still_a_picture() {
        let doc = svg(&[], "Org chart");
        assert!(doc.contains("No teams yet"));
    }
}
