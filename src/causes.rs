//! An error and every cause under it, on one line: how fanin words a
//! library's error (the HTTP client's) for logs and stored records, where
//! the top message alone ("error sending request") does not say why.

/// `error: cause: its cause: …`, walking [`std::error::Error::source`]. A
/// cause whose text the line already holds (some libraries repeat their
/// source in their own message) is not written twice.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn every_cause_is_named_once() {
        let io = Layer("Connection refused (os error 111)", None);
        let connect = Layer("tcp connect error: Connection refused (os error 111)", Some(Box::new(io)));
        let top =
            Layer("error sending request", Some(Box::new(Layer("client error (Connect)", Some(Box::new(connect))))));
        assert_eq!(
            error_chain(&top),
            "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
