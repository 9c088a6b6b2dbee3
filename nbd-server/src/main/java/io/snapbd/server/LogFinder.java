package io.snapbd.server;

import java.text.MessageFormat;
import java.util.ResourceBundle;

/**
 * Routes {@link System.Logger} (what the engine logs through) to {@link Log}, so that engine messages obey the
 * service's log level and look like the server's own lines on stderr. Found through
 * {@code META-INF/services/java.lang.System$LoggerFinder}.
 */
public final class LogFinder extends System.LoggerFinder {

    @Override
    public System.Logger getLogger(String name, Module module) {
        return new Bridge(name);
    }

    /** The {@link Log} level of a {@link System.Logger.Level}; null for OFF. */
    static Log.Level level(System.Logger.Level level) {
        switch (level) {
            case ERROR:
                return Log.Level.ERROR;
            case WARNING:
                return Log.Level.WARN;
            case INFO:
                return Log.Level.INFO;
            case OFF:
                return null;
            default:
                return Log.Level.DEBUG;     // ALL, TRACE, DEBUG
        }
    }

    private static final class Bridge implements System.Logger {
        private final String name;

        Bridge(String name) {
            this.name = name;
        }

        @Override
        public String getName() {
            return name;
        }

        @Override
        public boolean isLoggable(Level level) {
            Log.Level l = level(level);
            return l != null && Log.enabled(l);
        }

        @Override
        public void log(Level level, ResourceBundle bundle, String msg, Throwable thrown) {
            emit(level, thrown == null ? msg : msg + ": " + thrown);
        }

        @Override
        public void log(Level level, ResourceBundle bundle, String format, Object... params) {
            emit(level, params == null || params.length == 0 ? format : MessageFormat.format(format, params));
        }

        private void emit(Level level, String msg) {
            Log.Level l = level(level);
            if (l == null) {
                return;
            }
            switch (l) {
                case ERROR -> Log.error("%s", msg);
                case WARN -> Log.warn("%s", msg);
                case INFO -> Log.info("%s", msg);
                default -> Log.debug("%s", msg);
            }
        }
    }
}
