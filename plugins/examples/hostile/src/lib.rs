//! A deliberately misbehaving resource-type plugin for the sandbox tests. Its `validate`
//! does what `data.mode` says: loop forever, allocate without bound, recurse without end,
//! trap, answer garbage (not an object, or data off its own schema) or an oversized answer, wait on a slow HTTP endpoint, flood the log
//! — or behave (`ok`).

use neotenant_plugin_sdk::{
    FieldError, ResourceType, TypeInfo, Value, http, json, log, resource_type,
};

struct Hostile;

#[inline(never)]
fn recurse(n: u64, acc: &mut Vec<u64>) -> u64 {
    acc.push(n);
    if n == u64::MAX {
        return 0;
    }
    let r = recurse(n + 1, acc);
    std::hint::black_box(r) + n
}

impl ResourceType for Hostile {
    fn describe() -> TypeInfo {
        TypeInfo {
            name: "hostile".into(),
            title: "Misbehaving type".into(),
            schema: json!({"type": "object", "properties": {"mode": {"type": "string"},
                                                         "url": {"type": "string"}}}),
            ..Default::default()
        }
    }

    fn validate(data: Value) -> Result<Value, Vec<FieldError>> {
        match data["mode"].as_str().unwrap_or("ok") {
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard = Vec::new();
                loop {
                    let mut block = Vec::<u8>::with_capacity(4 << 20);
                    block.push(1);
                    hoard.push(block);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let mut acc = Vec::new();
                let r = recurse(0, &mut acc);
                Ok(json!({"r": r}))
            }
            "trap" => panic!("hostile plugin panics"),
            "garbage" => Ok(json!("not an object")),
            "off-schema" => Ok(json!({"mode": 42})),
            "huge" => Ok(json!({"blob": "x".repeat(3 << 19)})),
            "slow" => {
                let url = data["url"].as_str().unwrap_or_default();
                let _ = http::fetch(&http::Request {
                    method: "GET".into(),
                    url: url.into(),
                    headers: vec![],
                    body: vec![],
                });
                Ok(data)
            }
            "log-flood" => {
                for i in 0..100_000 {
                    log::info(&format!("flood {i}"));
                }
                Ok(data)
            }
            _ => Ok(data),
        }
    }
}

resource_type!(Hostile);
