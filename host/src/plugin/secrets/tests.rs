use std::sync::Mutex;

use super::*;

/// Collects what is written, permitting `permit` bytes a write.
#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>, usize);

#[async_trait::async_trait]
impl OutputStream for Sink {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        assert!(bytes.len() <= self.1, "a write over the permit");
        self.0.lock().unwrap().extend_from_slice(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(self.1)
    }
}

#[async_trait::async_trait]
impl Pollable for Sink {
    async fn ready(&mut self) {}
}

fn secrets(pairs: &[(&str, &str)]) -> Arc<SocketSecrets> {
    let dir = tempfile::tempdir().unwrap();
    let sources = pairs
        .iter()
        .map(|(name, value)| {
            let file = dir.path().join(name);
            std::fs::write(&file, format!("{value}\n")).unwrap();
            let src = SecretSource {
                env: None,
                file: Some(file),
                prefix: String::new(),
            };
            (name.to_string(), src)
        })
        .collect();
    Arc::new(SocketSecrets::resolve(&sources).unwrap())
}

fn write(stream: &mut DynOutputStream, data: &str) {
    let permit = stream.check_write().unwrap();
    assert!(permit >= data.len(), "{permit} < {}", data.len());
    stream
        .write(Bytes::copy_from_slice(data.as_bytes()))
        .unwrap();
}

#[test]
fn only_the_first_line_gets_its_placeholders_replaced_even_when_written_in_pieces() {
    let s = secrets(&[("pw", "s3cr3t!"), ("tok", "abc")]);
    let sink = Sink(Arc::default(), 65536);
    let mut out = s.wrap(Box::new(sink.clone()));
    write(&mut out, "CONNECT {\"pass\":\"${sec");
    out.flush().unwrap();
    assert!(
        sink.0.lock().unwrap().is_empty(),
        "a flush mid-line sends nothing"
    );
    write(
        &mut out,
        "ret:pw}\",\"t\":\"${secret:tok}${secret:nope}\"}\r\nPING\r\n",
    );
    write(&mut out, "PUB x ${secret:pw}\r\n");
    assert_eq!(
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap(),
        "CONNECT {\"pass\":\"s3cr3t!\",\"t\":\"abc${secret:nope}\"}\r\nPING\r\n\
         PUB x ${secret:pw}\r\n"
    );
}

#[test]
fn a_first_line_without_an_end_goes_out_as_written_and_writes_stay_within_permits() {
    let s = secrets(&[("pw", "x")]);
    let sink = Sink(Arc::default(), 65536);
    let mut out = s.wrap(Box::new(sink.clone()));
    let long = format!("${{secret:pw}}{}", "a".repeat(LINE_MAX - 12));
    write(&mut out, &long);
    assert_eq!(sink.0.lock().unwrap().len(), LINE_MAX);
    assert!(sink.0.lock().unwrap().starts_with(b"${secret:pw}"));
    write(&mut out, &"b".repeat(10_000));

    let mut fresh = s.wrap(Box::new(Sink(Arc::default(), 65536)));
    assert_eq!(fresh.check_write().unwrap(), LINE_MAX);
    let over = Bytes::from(vec![b'a'; LINE_MAX + 1]);
    assert!(matches!(fresh.write(over), Err(StreamError::Trap(_))));

    let big = secrets(&[("big", &"v".repeat(VALUE_MAX))]);
    let mut out = big.wrap(Box::new(Sink(Arc::default(), 65536)));
    let line = format!("{}\n", "${secret:big}".repeat(20));
    let err = out.write(Bytes::from(line)).unwrap_err();
    assert!(matches!(err, StreamError::LastOperationFailed(_)));
}

#[test]
fn socket_secrets_are_plain_tokens_named_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v");
    let one = |name: &str, value: &str| {
        std::fs::write(&file, value).unwrap();
        let src = SecretSource {
            env: None,
            file: Some(file.clone()),
            prefix: String::new(),
        };
        SocketSecrets::resolve(&BTreeMap::from([(name.to_string(), src)]))
    };
    assert!(one("nats_pw", "fine-Value_1").is_ok());
    let quote = one("pw", "has\"quote").unwrap_err();
    assert!(
        quote.starts_with("secrets.pw: the value may hold only"),
        "{quote}"
    );
    assert!(one("pw", "has space").is_err());
    assert!(one("pw", "").unwrap_err().contains("1 to 1024 bytes"));
    assert!(one("no.dots", "x").unwrap_err().contains("a name is"));
    let debug = format!("{:?}", one("pw", "hidden").unwrap());
    assert!(debug.contains("${secret:pw}") && !debug.contains("hidden"));
}

#[test]
fn placeholders_are_found_anywhere_in_the_settings() {
    let settings: toml::Table = toml::from_str(
        "user = \"u\"\npassword = \"${secret:pw}\"\n[auth]\nlist = [\"a\", \"x${secret:t1}y${secret:t2}\"]",
    )
    .unwrap();
    let mut found = named_in(&settings);
    found.sort();
    assert_eq!(
        found,
        [
            ("config.auth.list[1]".to_string(), "t1".to_string()),
            ("config.auth.list[1]".to_string(), "t2".to_string()),
            ("config.password".to_string(), "pw".to_string()),
        ]
    );
}

#[test]
fn secrets_come_from_files_or_the_environment_and_stay_out_of_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, "file-secret\n").unwrap();
    let sources = std::collections::BTreeMap::from([
        (
            "x-api-key".to_string(),
            SecretSource {
                env: None,
                file: Some(file),
                prefix: String::new(),
            },
        ),
        (
            "authorization".to_string(),
            SecretSource {
                env: Some("PATH".into()),
                file: None,
                prefix: "Bearer ".into(),
            },
        ),
    ]);
    let secrets = SecretHeaders::resolve(&sources).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", "the plugin's own".parse().unwrap());
    secrets.apply(&mut headers);
    assert_eq!(headers["x-api-key"], "file-secret", "the host's value wins");
    assert!(
        headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer /")
    );
    assert!(headers["x-api-key"].is_sensitive());
    assert!(!format!("{secrets:?}").contains("file-secret"));

    let missing = std::collections::BTreeMap::from([(
        "authorization".to_string(),
        SecretSource {
            env: Some("FERRY_SURELY_UNSET_VARIABLE".into()),
            file: None,
            prefix: String::new(),
        },
    )]);
    let err = SecretHeaders::resolve(&missing).unwrap_err();
    assert!(
        err.contains("FERRY_SURELY_UNSET_VARIABLE is not set"),
        "{err}"
    );
}
